//! Inbound limits: connections at once (in all, and per source address)
//! and the bytes all connections together hold for unfinished messages.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::transport::BoxStream;

/// Counts inbound connections.
pub(crate) struct ConnectionLimits {
    max_total: usize,
    max_per_source: usize,
    total: AtomicUsize,
    per_source: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Total,
    PerSource,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Total => "max_connections",
            Refusal::PerSource => "max_connections_per_source",
        }
    }
}

impl ConnectionLimits {
    pub(crate) fn new(max_total: usize, max_per_source: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_total,
            max_per_source,
            total: AtomicUsize::new(0),
            per_source: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for a connection from `ip`, held until the connection ends.
    pub(crate) fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Slot, Refusal> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total);
        }
        if let Some(ip) = ip {
            let mut m = crate::handle::lock(&self.per_source);
            let n = m.entry(ip).or_insert(0);
            if *n >= self.max_per_source {
                drop(m);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::PerSource);
            }
            *n += 1;
        }
        Ok(Slot { limits: self.clone(), ip })
    }

    /// Inbound connections open now.
    pub(crate) fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// One admitted connection; dropping it frees the slot.
pub(crate) struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut m = crate::handle::lock(&self.limits.per_source);
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An inbound stream holding its [`Slot`]: the slot is freed when the
/// stream is dropped, wherever that happens (a refused CER, the end of a
/// peer's connection).
pub(crate) struct Guarded {
    inner: BoxStream,
    _slot: Slot,
}

impl Guarded {
    pub(crate) fn new(inner: BoxStream, slot: Slot) -> Guarded {
        Guarded { inner, _slot: slot }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The bytes every connection of a node holds for messages not yet
/// complete, against one cap.
pub(crate) struct BufferBudget {
    max: usize,
    used: AtomicUsize,
}

impl BufferBudget {
    pub(crate) fn new(max: usize) -> BufferBudget {
        BufferBudget { max, used: AtomicUsize::new(0) }
    }

    /// Moves a connection's charge from `*charged` to `want` bytes.
    /// `false` (and the charge unchanged) when the budget cannot take it.
    pub(crate) fn recharge(&self, charged: &mut usize, want: usize) -> bool {
        use std::cmp::Ordering as O;
        match want.cmp(charged) {
            O::Equal => true,
            O::Less => {
                self.used.fetch_sub(*charged - want, Ordering::AcqRel);
                *charged = want;
                true
            }
            O::Greater => {
                let more = want - *charged;
                // Never above the cap, not even for a moment: a connection
                // checking meanwhile must not be refused for bytes that were
                // never held.
                let taken = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    used.checked_add(more).filter(|&n| n <= self.max)
                });
                if taken.is_err() {
                    return false;
                }
                *charged = want;
                true
            }
        }
    }

    /// Gives a connection's whole charge back.
    pub(crate) fn release(&self, charged: &mut usize) {
        self.recharge(charged, 0);
    }

    /// Bytes held now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_in_all_and_per_source() {
        let l = Arc::new(ConnectionLimits::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = l.admit(Some(a)).unwrap();
        let s2 = l.admit(Some(a)).unwrap();
        assert_eq!(l.admit(Some(a)).err(), Some(Refusal::PerSource));
        let s3 = l.admit(Some(b)).unwrap();
        assert_eq!(l.admit(Some(b)).err(), Some(Refusal::Total));
        assert_eq!(l.open(), 3);
        drop(s1);
        let s4 = l.admit(Some(a)).unwrap();
        drop((s2, s3, s4));
        assert_eq!(l.open(), 0);
        assert!(crate::handle::lock(&l.per_source).is_empty());
    }

    #[test]
    fn budget_refuses_beyond_its_cap_and_takes_back_releases() {
        let b = BufferBudget::new(100);
        let (mut x, mut y) = (0, 0);
        assert!(b.recharge(&mut x, 60));
        assert!(!b.recharge(&mut y, 50));
        assert_eq!((y, b.used()), (0, 60));
        assert!(b.recharge(&mut x, 10));
        assert!(b.recharge(&mut y, 90));
        assert_eq!(b.used(), 100);
        b.release(&mut x);
        b.release(&mut y);
        assert_eq!((x, y, b.used()), (0, 0, 0));
    }
}
