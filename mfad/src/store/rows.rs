//! A user's record as a row of the `users` table (JSON, defaults left out),
//! and the store-wide settings of the `meta` table.

use rusqlite::{Connection, OptionalExtension, params};

use super::sqlite::db;
use super::{Change, StoreError, UserRecord, decode, encode};

pub(super) fn read_user(conn: &Connection, user: &str) -> Result<Option<UserRecord>, StoreError> {
    // Decoded where SQLite holds the text: no copy of it first.
    let record = conn
        .prepare_cached("SELECT record FROM users WHERE name = ?1")
        .and_then(|mut stmt| stmt.query_row([user], |r| Ok(decode(user, r.get_ref(0)?.as_str()?))).optional())
        .map_err(db)?;
    record.transpose()
}

pub(super) fn apply_change(conn: &Connection, user: &str, change: Change) -> Result<(), StoreError> {
    match change {
        Change::Keep => Ok(()),
        Change::Put(record) => {
            let json = encode(&record)?;
            conn.prepare_cached(
                "INSERT INTO users (name, record) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET record = excluded.record",
            )
            .and_then(|mut stmt| stmt.execute(params![user, json]))
            .map(drop)
            .map_err(db)
        }
        Change::Delete => conn.execute("DELETE FROM users WHERE name = ?1", [user]).map(drop).map_err(db),
    }
}

pub(super) fn read_meta(conn: &Connection, name: &str) -> Result<Option<String>, StoreError> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| r.get(0)).optional().map_err(db)
}

/// Set a setting (`replace`: also when set; else only when not), or with
/// None remove it.
pub(super) fn write_meta(conn: &Connection, name: &str, value: Option<&str>, replace: bool) -> Result<(), StoreError> {
    let written = match (value, replace) {
        (Some(value), true) => conn.execute(
            "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            params![name, value],
        ),
        (Some(value), false) => conn.execute(
            "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
            params![name, value],
        ),
        (None, _) => conn.execute("DELETE FROM meta WHERE name = ?1", [name]),
    };
    written.map(drop).map_err(db)
}
