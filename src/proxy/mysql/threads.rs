//! MySQL connection ids: each client's greeting carries a proxy-side id, mapped to its
//! database connection's thread id once logged in, so `KILL [QUERY] <id>` (and the mysql
//! client's Ctrl-C, which sends it on a second connection) reaches the right thread — and
//! only when the asker is the same person, on the same Database, as the same db user.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// A logged-in session, as `KILL` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    /// The end user (certificate).
    pub user: String,
    /// The Database (`namespace/name`).
    pub database: String,
    /// The db user.
    pub db_user: String,
    /// The database connection's thread id.
    pub upstream_id: u32,
}

/// Live sessions by the id their greeting announced.
#[derive(Clone, Default)]
pub struct Threads {
    next: Arc<AtomicU32>,
    live: Arc<Mutex<HashMap<u32, Thread>>>,
}

/// Removes its session when dropped (when the session ends).
pub struct ThreadGuard {
    threads: Threads,
    id: u32,
}

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        self.threads.lock().remove(&self.id);
    }
}

/// Why a `KILL` is refused: as MySQL says it for an id it does not know (an id of someone
/// else's session is not told apart from one that does not exist).
pub fn unknown_thread(id: u64) -> String {
    format!("Unknown thread id: {id}")
}

impl Threads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Thread>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh id for a greeting: never 0, never one a live session has.
    pub fn allocate(&self) -> u32 {
        if self.next.load(Ordering::Relaxed) == 0 {
            let _ = self.next.compare_exchange(0, rand::random_range(1..1u32 << 20), Ordering::Relaxed, Ordering::Relaxed);
        }
        let live = self.lock();
        loop {
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            if id != 0 && !live.contains_key(&id) {
                return id;
            }
        }
    }

    /// Registers a logged-in session under its greeting's id.
    pub fn register(&self, id: u32, thread: Thread) -> ThreadGuard {
        self.lock().insert(id, thread);
        ThreadGuard { threads: self.clone(), id }
    }

    /// The database thread id to kill for `asker`'s `KILL <id>`, if `id` is a session of the
    /// same user, Database and db user.
    pub fn resolve(&self, id: u64, asker: &Thread) -> Result<u32, String> {
        let id32 = u32::try_from(id).map_err(|_| unknown_thread(id))?;
        match self.lock().get(&id32) {
            Some(t) if t.user == asker.user && t.database == asker.database && t.db_user == asker.db_user => Ok(t.upstream_id),
            _ => Err(unknown_thread(id)),
        }
    }
}

/// A `KILL` statement: whether it is `KILL QUERY`, and the id. `KILL [CONNECTION | QUERY] id`
/// with optional spaces, comments at the ends and a final `;`; anything else is not one.
pub fn parse_kill(sql: &[u8]) -> Option<(bool, u64)> {
    let text = std::str::from_utf8(sql).ok()?.trim().trim_end_matches(';').trim();
    let mut words = text.split_ascii_whitespace();
    if !words.next()?.eq_ignore_ascii_case("kill") {
        return None;
    }
    let mut word = words.next()?;
    let mut query = false;
    if word.eq_ignore_ascii_case("query") {
        query = true;
        word = words.next()?;
    } else if word.eq_ignore_ascii_case("connection") {
        word = words.next()?;
    }
    if words.next().is_some() || word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((query, word.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(user: &str, upstream_id: u32) -> Thread {
        Thread { user: user.into(), database: "default/orders".into(), db_user: "app".into(), upstream_id }
    }

    #[test]
    fn kill_statements_are_recognised_and_nothing_else() {
        assert_eq!(parse_kill(b"KILL QUERY 42"), Some((true, 42)));
        assert_eq!(parse_kill(b"  kill   query\t7 ; "), Some((true, 7)));
        assert_eq!(parse_kill(b"KILL 9"), Some((false, 9)));
        assert_eq!(parse_kill(b"KILL CONNECTION 9;"), Some((false, 9)));
        for other in [&b"SELECT 1"[..], b"KILL", b"KILL QUERY", b"KILL QUERY x", b"KILL QUERY 1; SELECT 2", b"KILL QUERY 1 2", b"KILL USER bob", b"\xff"] {
            assert_eq!(parse_kill(other), None, "{other:?}");
        }
    }

    #[test]
    fn only_the_same_person_on_the_same_route_may_kill_a_session() {
        let threads = Threads::default();
        let (a, b) = (threads.allocate(), threads.allocate());
        assert!(a != 0 && b != 0 && a != b);
        let guard = threads.register(a, thread("alice", 1234));
        assert_eq!(threads.resolve(u64::from(a), &thread("alice", 0)), Ok(1234));
        for asker in
            [thread("bob", 0), Thread { db_user: "admin".into(), ..thread("alice", 0) }, Thread { database: "default/other".into(), ..thread("alice", 0) }]
        {
            assert_eq!(threads.resolve(u64::from(a), &asker), Err(unknown_thread(u64::from(a))), "{asker:?}");
        }
        assert!(threads.resolve(u64::from(b), &thread("alice", 0)).is_err(), "allocated but never logged in");
        assert!(threads.resolve(1 << 40, &thread("alice", 0)).is_err());
        drop(guard);
        assert!(threads.resolve(u64::from(a), &thread("alice", 0)).is_err(), "gone with its session");
    }
}
