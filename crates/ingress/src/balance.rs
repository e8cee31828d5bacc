//! Load balancing over a pod's replicas: each request or connection goes to the replica with
//! the fewest in flight (least outstanding requests), ties taken in turn so that sequential
//! requests spread over idle replicas too.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// One replica's address and what is in flight to it now.
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    pub(crate) ip: IpAddr,
    load: Arc<AtomicU64>,
}

impl Backend {
    /// Counts one request or connection to this replica until the guard is dropped.
    pub(crate) fn enter(&self) -> Outstanding {
        self.load.fetch_add(1, Ordering::AcqRel);
        Outstanding(Arc::clone(&self.load))
    }
}

/// A request or connection in flight to one replica.
#[derive(Debug)]
pub(crate) struct Outstanding(Arc<AtomicU64>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The replicas of one pod port.
#[derive(Debug, Default)]
pub(crate) struct Backends {
    list: Vec<Backend>,
    /// Where the search for the least busy starts, moved on by each pick.
    next: AtomicUsize,
}

impl Backends {
    /// Just `ip`.
    pub(crate) fn one(ip: IpAddr) -> Self {
        let mut backends = Self::default();
        backends.set(&[ip]);
        backends
    }

    /// Replaces the replicas with `ips`, keeping the counts of those that stay, so requests in
    /// flight to them still count.
    pub(crate) fn set(&mut self, ips: &[IpAddr]) {
        let mut kept = Vec::with_capacity(ips.len());
        for ip in ips {
            if kept.iter().any(|b: &Backend| b.ip == *ip) {
                continue;
            }
            let load = self.list.iter().find(|b| b.ip == *ip).map_or_else(Arc::default, |b| Arc::clone(&b.load));
            kept.push(Backend { ip: *ip, load });
        }
        self.list = kept;
    }

    /// The replica with the fewest requests in flight; `None` if there are none.
    pub(crate) fn pick(&self) -> Option<&Backend> {
        let n = self.list.len();
        let start = if n > 1 { self.next.fetch_add(1, Ordering::Relaxed) % n } else { 0 };
        (0..n).map(|i| &self.list[(start + i) % n]).min_by_key(|b| b.load.load(Ordering::Acquire))
    }

    /// The replicas' addresses.
    pub(crate) fn ips(&self) -> Vec<IpAddr> {
        self.list.iter().map(|b| b.ip).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn least_outstanding_wins_and_ties_rotate() {
        let mut backends = Backends::default();
        backends.set(&[ip(1), ip(2), ip(3)]);
        // Idle replicas are taken in turn.
        let picked: Vec<IpAddr> = (0..3).map(|_| backends.pick().map(|b| b.ip).unwrap_or(ip(0))).collect();
        let mut sorted = picked.clone();
        sorted.sort();
        assert_eq!(sorted, vec![ip(1), ip(2), ip(3)]);
        // Two in flight on 1, one on 2: 3 is the least busy, whatever the turn.
        let busy: Vec<Outstanding> = [ip(1), ip(1), ip(2)]
            .iter()
            .filter_map(|i| backends.list.iter().find(|b| b.ip == *i).map(Backend::enter))
            .collect();
        for _ in 0..5 {
            assert_eq!(backends.pick().map(|b| b.ip), Some(ip(3)));
        }
        // Counts survive a change of the set for replicas that stay.
        backends.set(&[ip(2), ip(1)]);
        assert_eq!(backends.pick().map(|b| b.ip), Some(ip(2)));
        drop(busy);
        assert_eq!(backends.ips(), vec![ip(2), ip(1)]);
        backends.set(&[]);
        assert!(backends.pick().is_none());
    }
}
