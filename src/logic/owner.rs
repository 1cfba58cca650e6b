//! An owner id as a holder keeps it: inline up to `INLINE` bytes, so that a held lock
//! with a UUID-sized owner (Redisson's `uuid:thread`, a UUID, `host:pid:thread`) is one
//! allocation, not two.

use std::fmt;
use std::ops::Deref;

/// Owners up to this many bytes are stored inline.
pub const INLINE: usize = 46;

#[derive(Clone, PartialEq, Eq)]
pub enum Owner {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Owner {
    pub fn new(owner: &[u8]) -> Owner {
        if owner.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..owner.len()].copy_from_slice(owner);
            Owner::Inline { len: owner.len() as u8, bytes }
        } else {
            Owner::Heap(owner.into())
        }
    }

    /// Bytes kept outside the holder.
    pub fn heap_size(&self) -> usize {
        match self {
            Owner::Inline { .. } => 0,
            Owner::Heap(b) => b.len(),
        }
    }
}

impl Deref for Owner {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Owner::Inline { len, bytes } => &bytes[..*len as usize],
            Owner::Heap(b) => b,
        }
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_read_back_as_given_inline_or_not() {
        for len in [1, INLINE - 1, INLINE, INLINE + 1, 500] {
            let given: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let owner = Owner::new(&given);
            assert_eq!(&*owner, &given[..]);
            assert_eq!(matches!(owner, Owner::Inline { .. }), len <= INLINE, "{len}");
        }
        assert_ne!(Owner::new(b"ab"), Owner::new(b"abc"));
    }

    #[test]
    fn an_inline_owner_keeps_a_held_mutex_in_one_small_allocation() {
        assert!(std::mem::size_of::<Owner>() <= 48);
    }
}
