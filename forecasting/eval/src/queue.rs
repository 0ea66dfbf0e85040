//! The fluid queue of a group of replicas (../shared/EVAL.md section 3): the one implementation that both the
//! backtest's model ([`crate::backtest::simulate`]) and the agent's simulator (`gpu_agent::sim`) step.
//!
//! Why here and not in `forecasting::latency_model`: this queue is the *world* the product is measured against,
//! not something the product computes. The live product never models its queue: it reads queue depth, delays
//! and throughput from the agents. The latency model is the product's own estimate (inter-token latency against
//! batch size, fitted from what the agents report) and must stay free to be wrong about the world; putting the
//! world's queue beside it would let a measurement borrow the product's assumptions. The backtest and the
//! simulator are two clocks over the same world (fixed steps of Δ seconds, and wall-clock intervals replayed at
//! a speed-up), so the world model lives with the evaluation harnesses and takes the interval's work and
//! capacity as plain replica-seconds.

/// What one interval of the queue did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueStep {
    /// Work waiting to be served during the interval: the previous backlog plus the arrivals, replica-seconds.
    pub inflow: f64,
    /// Work still queued at the end of the interval, replica-seconds (EVAL.md's `b_t`).
    pub backlog: f64,
    /// Busy fraction of the serving capacity, 0..=1 (EVAL.md's `u_t`: 1 when there is work and no capacity).
    pub utilisation: f64,
    /// Share of the waiting work served during the interval, 0..=1 (1 when nothing waited).
    pub served_fraction: f64,
}

/// A fluid FIFO queue: work arrives, the capacity of the interval serves it, the rest waits.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FluidQueue {
    backlog: f64,
}

impl FluidQueue {
    /// An empty queue (EVAL.md's `b_{-1} = 0`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Work queued now, replica-seconds.
    pub fn backlog(&self) -> f64 {
        self.backlog
    }

    /// Advances the queue by one interval in which `work` replica-seconds arrive and `capacity` replica-seconds
    /// of service are available (ready replicas times the interval, times any efficiency factor):
    /// `b_t = max(0, b_{t-1} + w_t - c_t)`, `u_t = min(1, (b_{t-1} + w_t) / c_t)`.
    pub fn step(&mut self, work: f64, capacity: f64) -> QueueStep {
        let inflow = self.backlog + work;
        let backlog = (inflow - capacity).max(0.0);
        let utilisation = if capacity > 0.0 {
            (inflow / capacity).min(1.0)
        } else if inflow > 0.0 {
            1.0
        } else {
            0.0
        };
        let served_fraction = if inflow > 0.0 { (capacity / inflow).min(1.0) } else { 1.0 };
        self.backlog = backlog;
        QueueStep { inflow, backlog, utilisation, served_fraction }
    }
}

/// Queueing delay of a backlog spread over `ready` replicas, seconds (EVAL.md's `d_t = b_t / ready_t`): 0 without
/// a backlog, infinite with a backlog and no replica.
pub fn queue_delay_s(backlog: f64, ready: u32) -> f64 {
    if backlog <= 0.0 {
        0.0
    } else if ready == 0 {
        f64::INFINITY
    } else {
        backlog / f64::from(ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_carries_over_and_utilisation_is_capped() {
        let mut q = FluidQueue::new();
        let s = q.step(35.0, 50.0);
        assert_eq!((s.inflow, s.backlog, s.utilisation, s.served_fraction), (35.0, 0.0, 0.7, 1.0));
        let s = q.step(30.0, 20.0);
        assert_eq!((s.backlog, s.utilisation), (10.0, 1.0));
        assert!((s.served_fraction - 20.0 / 30.0).abs() < 1e-15);
        let s = q.step(10.0, 20.0);
        assert_eq!((s.inflow, s.backlog, s.utilisation), (20.0, 0.0, 1.0));
        assert_eq!(q.backlog(), 0.0);
    }

    #[test]
    fn no_capacity_with_work_is_fully_busy() {
        let mut q = FluidQueue::new();
        let s = q.step(5.0, 0.0);
        assert_eq!((s.backlog, s.utilisation, s.served_fraction), (5.0, 1.0, 0.0));
        assert_eq!(FluidQueue::new().step(0.0, 0.0).utilisation, 0.0);
    }

    #[test]
    fn delay_per_replica() {
        assert_eq!(queue_delay_s(0.0, 0), 0.0);
        assert_eq!(queue_delay_s(4.0, 0), f64::INFINITY);
        assert_eq!(queue_delay_s(4.0, 2), 2.0);
    }
}
