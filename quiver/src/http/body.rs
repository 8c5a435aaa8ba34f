//! A request body that must keep arriving at a minimum rate.
//!
//! After a grace period, a body that has delivered `n` bytes must have done so within
//! `grace + n / rate`; when that deadline passes with nothing new, the body fails and the
//! handler answers with an S3-shaped error (its body could not be read). This bounds how long a
//! client that sends a byte a second can hold a connection busy, while a large body on a slow
//! but honest link keeps going.
//!
//! The body also tells its connection when it has been read whole (`on_end`): from then on the
//! request is being handled and the connection may not be closed to make room for another.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::time::{Instant, Sleep};

/// What the body must do: deliver its first bytes within `grace`, then `rate` bytes a second.
#[derive(Debug, Clone, Copy)]
pub struct MinRate {
    pub grace: Duration,
    pub bytes_per_second: u64,
}

impl MinRate {
    fn deadline(&self, started: Instant, received: u64) -> Instant {
        let earned = Duration::from_secs_f64(received as f64 / self.bytes_per_second.max(1) as f64);
        started + self.grace + earned
    }
}

/// The error a too-slow body fails with.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived slower than {0} bytes a second")]
pub struct SlowBody(u64);

pub struct MinRateBody<B> {
    inner: B,
    rate: MinRate,
    started: Instant,
    received: u64,
    /// Armed the first time the body waits for data.
    timer: Option<Pin<Box<Sleep>>>,
    slow: Counter,
    on_end: Option<OnEnd>,
}

/// Called once, when the body has been read whole.
pub type OnEnd = Box<dyn FnOnce() + Send>;

impl<B: Body> MinRateBody<B> {
    pub fn new(inner: B, rate: MinRate, slow: Counter, on_end: OnEnd) -> Self {
        let mut body = MinRateBody {
            inner,
            rate,
            started: Instant::now(),
            received: 0,
            timer: None,
            slow,
            on_end: Some(on_end),
        };
        if body.inner.is_end_stream() {
            body.ended();
        }
        body
    }

    fn ended(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end();
        }
    }
}

impl<B> Body for MinRateBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    let deadline = this.rate.deadline(this.started, this.received);
                    if let Some(timer) = &mut this.timer {
                        timer.as_mut().reset(deadline);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => {
                this.ended();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let timer = this.timer.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(
                        this.rate.deadline(this.started, this.received),
                    ))
                });
                if timer.as_mut().poll(cx).is_ready() {
                    this.slow.inc();
                    return Poll::Ready(Some(Err(SlowBody(this.rate.bytes_per_second).into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A body that yields `chunks` chunks of `chunk` bytes, `every` apart, then ends.
    struct Trickle {
        chunks: usize,
        chunk: usize,
        every: Duration,
        next: Option<Pin<Box<Sleep>>>,
    }

    impl Body for Trickle {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let this = self.get_mut();
            if this.chunks == 0 {
                return Poll::Ready(None);
            }
            let every = this.every;
            let next = this
                .next
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
            if next.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.next = None;
            this.chunks -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; this.chunk])))))
        }
    }

    async fn read_all<B: Body<Data = Bytes> + Unpin>(mut body: B) -> Result<usize, B::Error> {
        let mut total = 0;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            total += frame?.data_ref().map_or(0, |data| data.len());
        }
        Ok(total)
    }

    fn flag(ended: &Arc<AtomicBool>) -> OnEnd {
        let ended = ended.clone();
        Box::new(move || ended.store(true, Ordering::Relaxed))
    }

    #[test]
    fn an_empty_body_has_ended_at_once() {
        let ended = Arc::new(AtomicBool::new(false));
        let rate = MinRate {
            grace: Duration::from_secs(1),
            bytes_per_second: 1,
        };
        let _body = MinRateBody::new(
            axum::body::Body::empty(),
            rate,
            Counter::default(),
            flag(&ended),
        );
        assert!(ended.load(Ordering::Relaxed));
    }

    const RATE: MinRate = MinRate {
        grace: Duration::from_secs(10),
        bytes_per_second: 1000,
    };

    #[tokio::test(start_paused = true)]
    async fn a_trickle_is_cut_after_the_grace_period() {
        let slow = Counter::default();
        // One byte a second: 10 s of grace plus 1 ms per byte received.
        let trickle = Trickle {
            chunks: 1_000,
            chunk: 1,
            every: Duration::from_secs(1),
            next: None,
        };
        let started = Instant::now();
        let ended = Arc::new(AtomicBool::new(false));
        let error = read_all(MinRateBody::new(trickle, RATE, slow.clone(), flag(&ended)))
            .await
            .expect_err("too slow");
        assert!(error.to_string().contains("slower than 1000 bytes"));
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(10) && elapsed < Duration::from_secs(11));
        assert_eq!(slow.get(), 1);
        assert!(!ended.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_at_the_rate_arrives_whole() {
        let slow = Counter::default();
        // 2,000 bytes a second for a minute, well past the grace period.
        let steady = Trickle {
            chunks: 60,
            chunk: 2_000,
            every: Duration::from_secs(1),
            next: None,
        };
        let ended = Arc::new(AtomicBool::new(false));
        let body = MinRateBody::new(steady, RATE, slow.clone(), flag(&ended));
        assert!(!ended.load(Ordering::Relaxed));
        let read = read_all(body).await.expect("fast enough");
        assert_eq!(read, 120_000);
        assert_eq!(slow.get(), 0);
        assert!(ended.load(Ordering::Relaxed));
    }
}
