//! The Balancer: gives each accepted connection to the least-loaded IOWorker.
//!
//! Load is the workers' connection count (exact: a slot is reserved before the hand-off) and
//! the outbound bytes they publish, so a burst of accepts spreads out at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::hub::{Hub, NewConn};

/// Why [`Balancer::dispatch`] gave a connection back.
#[derive(Debug)]
pub enum NotTaken {
    /// Every worker is at `max_connections`: the connection is to be refused (HTTP 503).
    Full(NewConn),
    /// A worker has room, but its inbox is full: a burst of accepts it has not caught up with
    /// yet. Not a full server; the connection is to be handed over again shortly.
    Busy(NewConn),
}

pub struct Balancer {
    hub: Arc<Hub>,
    connection_weight: f64,
}

impl Balancer {
    pub fn new(hub: Arc<Hub>, connection_weight: f64) -> Balancer {
        Balancer {
            hub,
            connection_weight,
        }
    }

    /// Each worker's `max_connections` (the same for all), for the log: it may have been
    /// lowered at start to what the descriptor limit covers.
    pub fn max_connections(&self) -> usize {
        self.hub.port(0).max_connections
    }

    /// The worker's load, and its connection count: equal loads go to the worker with the
    /// fewest connections (with a `connection_weight` of 0 every idle worker's load is 0).
    fn score(&self, worker: usize) -> Option<(f64, usize)> {
        let port = self.hub.port(worker);
        let conns = port.connections.load(Ordering::Relaxed);
        if conns >= port.max_connections {
            return None;
        }
        let queued = port.queued_bytes.load(Ordering::Relaxed) as f64 / 65536.0;
        Some((conns as f64 * self.connection_weight + queued, conns))
    }

    /// Hands the connection to a worker and wakes it; gives it back when no worker can take
    /// it now, saying why.
    pub fn dispatch(&self, conn: NewConn) -> Result<usize, NotTaken> {
        let mut order: Vec<((f64, usize), usize)> = (0..self.hub.workers())
            .filter_map(|w| self.score(w).map(|s| (s, w)))
            .collect();
        order.sort_by(|(a, _), (b, _)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut conn = conn;
        let mut busy = false;
        for (_, w) in order {
            let port = self.hub.port(w);
            if !port.reserve_slot() {
                continue; // another listener took the last slot meanwhile
            }
            match port.accepts.push(conn) {
                Ok(()) => {
                    port.notify();
                    return Ok(w);
                }
                Err(back) => {
                    port.release_slot();
                    conn = back;
                    busy = true;
                }
            }
        }
        Err(if busy {
            NotTaken::Busy(conn)
        } else {
            NotTaken::Full(conn)
        })
    }

    /// A refused connection (`conn.refuse` says why: every worker is full, or its address is
    /// at its limit): let the worker with the most room for refused connections answer 503
    /// (ignoring the limit for this short-lived connection), so that refusals linger in every
    /// worker's room, not in the first one's while the others stay empty. Gives the
    /// connection back if the inboxes are full: the caller waits for the workers to catch
    /// up, as for [`NotTaken::Busy`].
    pub fn refuse(&self, conn: NewConn) -> Result<(), NewConn> {
        debug_assert!(conn.refuse.is_some());
        let w = (0..self.hub.workers())
            .min_by_key(|&w| {
                let port = self.hub.port(w);
                port.refused() + port.accepts.len()
            })
            .unwrap_or(0);
        let port = self.hub.port(w);
        port.accepts.push(conn)?;
        port.notify();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_conn() -> NewConn {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        NewConn {
            fd: a.into(),
            peer: "192.0.2.1:1".parse().unwrap(),
            listener: 0,
            refuse: None,
            ticket: None,
        }
    }

    #[test]
    fn connections_spread_evenly_whatever_the_connection_weight() {
        for weight in [0.0, 1.0] {
            let hub = Arc::new(Hub::with_inbox(4, 1000, 100).unwrap());
            let balancer = Balancer::new(Arc::clone(&hub), weight);
            for _ in 0..100 {
                balancer.dispatch(new_conn()).unwrap();
            }
            for w in 0..4 {
                assert_eq!(hub.port(w).accepts.len(), 25, "worker {w}, weight {weight}");
            }
        }
    }
}
