"""A fenced external resource: a SQLite row that remembers the highest fencing token it
accepted and refuses a write carrying an older one (README, "Recipes").

    python3 fenced_sqlite.py DB ROW TOKEN VALUE   -> prints "accepted" or "stale <highest>"

The check and the write are one statement, so two writers cannot interleave between
them: the row only changes when the caller's token is at least the highest seen.
"""

import sqlite3
import sys


def fenced_write(db: str, row: str, token: int, value: str) -> str:
    con = sqlite3.connect(db)
    with con:
        con.execute("CREATE TABLE IF NOT EXISTS resource (id TEXT PRIMARY KEY, value TEXT, token INTEGER)")
        con.execute("INSERT OR IGNORE INTO resource (id, value, token) VALUES (?, NULL, 0)", (row,))
        cur = con.execute(
            "UPDATE resource SET value = ?, token = ? WHERE id = ? AND token <= ?",
            (value, token, row, token),
        )
        if cur.rowcount == 1:
            return "accepted"
        (highest,) = con.execute("SELECT token FROM resource WHERE id = ?", (row,)).fetchone()
        return f"stale {highest}"


if __name__ == "__main__":
    db, row, token, value = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    print(fenced_write(db, row, token, value))
