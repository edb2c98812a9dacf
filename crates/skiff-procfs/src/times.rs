//! `/proc/uptime` and `/proc/loadavg` of a container.
//!
//! Uptime counts from the start of the cgroup's oldest process (the container's init), and
//! the idle figure is the CPU time the container could have used in that time and did not.
//! The load average is the kernel's formula applied to the cgroup alone: every
//! [`SAMPLE_EVERY`] the server counts the cgroup's runnable and uninterruptible threads and
//! folds the count into three exponentially decaying averages (1, 5 and 15 minutes). A
//! cgroup is sampled from the first time one of its processes reads `/proc/loadavg`, so its
//! first figures start from 0, as a freshly booted machine's do.

use std::time::Duration;

use crate::figures::Tasks;

/// How often the server samples the load of the cgroups it serves (the kernel's period).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Renders `/proc/uptime`: seconds since the container started, then idle CPU seconds
/// (summed over its CPUs). `started` is `None` when the cgroup has no process: the host's.
pub fn render_uptime(host_uptime: f64, started: Option<f64>, cpus: usize, used_ns: u64) -> String {
    let uptime = started.map_or(host_uptime, |s| (host_uptime - s).max(0.0));
    let idle = (uptime * cpus.max(1) as f64 - used_ns as f64 / 1e9).max(0.0);
    format!("{uptime:.2} {idle:.2}\n")
}

/// The host's uptime in seconds from the text of its `/proc/uptime`.
pub fn parse_uptime(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Three load averages, decayed as the kernel does.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadAvg {
    /// 1, 5 and 15 minute averages.
    pub averages: [f64; 3],
}

impl LoadAvg {
    /// Folds in one sample of `active` threads (runnable plus uninterruptible), taken
    /// `elapsed` after the previous one.
    pub fn sample(&mut self, active: u64, elapsed: Duration) {
        for (avg, window) in self.averages.iter_mut().zip([60.0, 300.0, 900.0]) {
            let decay = (-elapsed.as_secs_f64() / window).exp();
            *avg = *avg * decay + active as f64 * (1.0 - decay);
        }
    }

    /// Renders `/proc/loadavg`: the averages, running/total threads, and the last pid
    /// (unknown inside a container's PID namespace from here: 0).
    pub fn render(&self, tasks: &Tasks) -> String {
        let [a, b, c] = self.averages;
        format!(
            "{a:.2} {b:.2} {c:.2} {}/{} 0\n",
            tasks.running.max(1),
            tasks.total.max(1)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_counts_from_the_containers_start() {
        assert_eq!(
            render_uptime(1000.0, Some(990.5), 2, 1_000_000_000),
            "9.50 18.00\n"
        );
        assert_eq!(render_uptime(1000.0, None, 1, 0), "1000.00 1000.00\n");
        assert_eq!(render_uptime(1.0, Some(2.0), 1, 5), "0.00 0.00\n");
        assert_eq!(parse_uptime("350735.47 234388.90\n"), Some(350_735.47));
    }

    #[test]
    fn load_rises_towards_a_steady_count_and_decays_back() {
        let mut load = LoadAvg::default();
        for _ in 0..120 {
            load.sample(2, SAMPLE_EVERY);
        }
        assert!((load.averages[0] - 2.0).abs() < 0.01, "{load:?}");
        assert!(load.averages[1] > 1.5 && load.averages[1] < 2.0, "{load:?}");
        assert!(load.averages[2] < load.averages[1], "{load:?}");
        for _ in 0..120 {
            load.sample(0, SAMPLE_EVERY);
        }
        assert!(load.averages[0] < 0.01, "{load:?}");
        let tasks = Tasks {
            total: 3,
            running: 1,
            blocked: 0,
        };
        assert_eq!(LoadAvg::default().render(&tasks), "0.00 0.00 0.00 1/3 0\n");
    }
}
