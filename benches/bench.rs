//! Placeholder until the benchmark lands.
fn main() {
    println!("bench: nothing measured yet");
}
