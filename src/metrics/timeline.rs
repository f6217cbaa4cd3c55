//! A route's recent past, for the dashboard's charts and `/api/routes/NAME/history`: one
//! point a second for the last 15 minutes and one a minute for the last 24 hours, in fixed
//! memory. Each point is taken from the route's counters by the once-a-second sampler, as
//! a difference from the last; the request path does nothing more than it did.

use super::{quantile_of, RouteStats, BUCKETS};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;

pub const SECONDS: usize = 15 * 60;
pub const MINUTES: usize = 24 * 60;

/// What happened in one second (or minute).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Point {
    /// Unix time the interval started.
    pub t: u64,
    /// Responses by class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub by_class: [u32; 5],
    pub upstream_errors: u32,
    /// In flight when the point was taken (the largest of the minute's).
    pub inflight: u32,
    pub p50_ms: Option<f32>,
    pub p99_ms: Option<f32>,
}

impl Point {
    pub fn requests(&self) -> u32 {
        self.by_class.iter().sum()
    }
}

type Histogram = [u64; BUCKETS.len() + 1];

#[derive(Debug, Default)]
pub struct Timeline {
    seconds: VecDeque<Point>,
    minutes: VecDeque<Point>,
    /// The counters at the last sample.
    last: Option<(Point, Histogram)>,
    /// The minute being summed: its point and histogram.
    minute: Option<(Point, Histogram)>,
}

/// The counters now, as a point (cumulative) and the histogram.
fn read(stats: &RouteStats) -> (Point, Histogram) {
    let hist: Histogram = std::array::from_fn(|i| stats.buckets[i].load(Relaxed));
    let p = Point {
        by_class: std::array::from_fn(|i| stats.by_class[i].load(Relaxed) as u32),
        upstream_errors: stats.upstream_errors.load(Relaxed) as u32,
        ..Point::default()
    };
    (p, hist)
}

fn quantiles(p: &mut Point, hist: &Histogram) {
    p.p50_ms = quantile_of(hist, 0.5).map(|s| (s * 1000.0) as f32);
    p.p99_ms = quantile_of(hist, 0.99).map(|s| (s * 1000.0) as f32);
}

fn push(q: &mut VecDeque<Point>, cap: usize, p: Point) {
    if q.len() == cap {
        q.pop_front();
    }
    q.push_back(p);
}

impl Timeline {
    /// Count from the counters as they are now (stats restored at the daemon's start).
    pub fn start_at(&mut self, stats: &RouteStats) {
        self.last = Some(read(stats));
    }

    /// Take the second that ended at `now` (unix seconds) from the route's counters.
    ///
    /// The first sample counts from zero: a route's stats start at zero, unless restored
    /// from stats.json, which sets the starting point with [`Timeline::start_at`].
    pub fn sample(&mut self, stats: &RouteStats, now: u64) {
        let (cum, hist) = read(stats);
        let (prev, prev_hist) = self
            .last
            .replace((cum, hist))
            .unwrap_or((Point::default(), [0; BUCKETS.len() + 1]));
        let mut p = Point {
            t: now.saturating_sub(1),
            by_class: std::array::from_fn(|i| cum.by_class[i].wrapping_sub(prev.by_class[i])),
            upstream_errors: cum.upstream_errors.wrapping_sub(prev.upstream_errors),
            inflight: stats.inflight.load(Relaxed).max(0) as u32,
            ..Point::default()
        };
        let delta: Histogram = std::array::from_fn(|i| hist[i].saturating_sub(prev_hist[i]));
        quantiles(&mut p, &delta);
        push(&mut self.seconds, SECONDS, p);
        // The minute: summed until the clock passes into the next one.
        let minute_start = p.t - p.t % 60;
        match &mut self.minute {
            Some((m, mh)) if m.t == minute_start => {
                for i in 0..5 {
                    m.by_class[i] += p.by_class[i];
                }
                m.upstream_errors += p.upstream_errors;
                m.inflight = m.inflight.max(p.inflight);
                for i in 0..mh.len() {
                    mh[i] += delta[i];
                }
            }
            _ => {
                if let Some((mut m, mh)) = self.minute.take() {
                    quantiles(&mut m, &mh);
                    push(&mut self.minutes, MINUTES, m);
                }
                self.minute = Some((
                    Point {
                        t: minute_start,
                        ..p
                    },
                    delta,
                ));
            }
        }
    }

    /// The points of the last `secs` seconds: by the second up to 15 minutes, else by the
    /// minute (the current minute included). Returns (resolution in seconds, points).
    pub fn window(&self, secs: u64) -> (u64, Vec<Point>) {
        let newest = self.seconds.back().map_or(0, |p| p.t);
        let from = newest.saturating_sub(secs.saturating_sub(1));
        if secs <= SECONDS as u64 {
            let v = self
                .seconds
                .iter()
                .filter(|p| p.t >= from)
                .copied()
                .collect();
            return (1, v);
        }
        let mut v: Vec<Point> = self
            .minutes
            .iter()
            .filter(|p| p.t >= from)
            .copied()
            .collect();
        if let Some((mut m, mh)) = self.minute {
            quantiles(&mut m, &mh);
            v.push(m);
        }
        (60, v)
    }

    /// Bytes held, for `portok status`.
    pub fn memory(&self) -> usize {
        (self.seconds.capacity() + self.minutes.capacity()) * std::mem::size_of::<Point>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn seconds_and_minutes_are_differences_in_fixed_memory() {
        let stats = RouteStats::default();
        let mut t = Timeline::default();
        stats.by_class[1].fetch_add(5, Relaxed);
        t.sample(&stats, 1000);
        assert_eq!(
            t.window(900).1[0].by_class[1],
            5,
            "the first second counts from zero"
        );
        t = Timeline::default();
        t.start_at(&stats);
        t.sample(&stats, 1000);
        for s in 1001..=1000 + 2000 {
            stats.by_class[1].fetch_add(3, Relaxed);
            stats.buckets[2].fetch_add(3, Relaxed);
            if s % 100 == 0 {
                stats.by_class[4].fetch_add(1, Relaxed);
                stats.buckets[12].fetch_add(1, Relaxed);
            }
            t.sample(&stats, s);
        }
        let (res, secs) = t.window(900);
        assert_eq!((res, secs.len()), (1, SECONDS));
        assert!(secs.iter().all(|p| p.by_class[1] == 3), "{:?}", &secs[..3]);
        assert_eq!(secs.iter().map(|p| p.by_class[4]).sum::<u32>(), 9);
        assert_eq!(secs.last().unwrap().t, 2999);
        // A second with only fast requests, and one with a slow one.
        let fast = secs[secs.len() - 2];
        assert!(fast.p99_ms.unwrap() <= 2.5, "{fast:?}");
        assert!(secs.last().unwrap().p99_ms.unwrap() > 1000.0);
        let (res, mins) = t.window(86_400);
        assert_eq!(res, 60);
        // Whole minutes hold 180 2xx; the first and the current one are partial.
        assert!(
            mins[1..mins.len() - 1].iter().all(|m| m.by_class[1] == 180),
            "{mins:?}"
        );
        let total: u32 = mins.iter().map(|m| m.by_class[1]).sum();
        assert_eq!(total, 6000);
        for s in 3001..200_000 {
            t.sample(&stats, s);
        }
        assert!(t.memory() <= (SECONDS + MINUTES) * 2 * std::mem::size_of::<Point>());
        let day = t.window(86_400).1.len();
        assert!((MINUTES..=MINUTES + 1).contains(&day), "{day}");
    }
}
