//! Prometheus metrics of the API server (`GET /metrics`): request counts and latency by verb,
//! resource and code, and the number of open watches.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `apiserver_request_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

/// Labels of `apiserver_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: String,
    resource: String,
}

type HistogramFamily = Family<LatencyLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    watches: Gauge,
}

impl Metrics {
    /// Empty metrics, registered under their Prometheus names.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let watches = Gauge::default();
        registry.register(
            "apiserver_request",
            "Requests answered, by verb, resource and HTTP code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Time to answer a request (to the start of the stream for watches)",
            latency.clone(),
        );
        registry.register(
            "apiserver_registered_watchers",
            "Client watches open now",
            watches.clone(),
        );
        Arc::new(Metrics {
            registry,
            requests,
            latency,
            watches,
        })
    }

    /// Records one answered request.
    pub fn observe(&self, verb: &str, resource: &str, code: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.to_string(),
                resource: resource.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                verb: verb.to_string(),
                resource: resource.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A guard counting one open watch until dropped.
    pub fn watch_opened(self: &Arc<Metrics>) -> WatchGuard {
        self.watches.inc();
        WatchGuard {
            metrics: Arc::clone(self),
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Counts one open watch; decrements the gauge when dropped.
pub struct WatchGuard {
    metrics: Arc<Metrics>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.metrics.watches.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_show_up_in_the_exposition() {
        let metrics = Metrics::new();
        metrics.observe("GET", "pods", 200, Duration::from_millis(3));
        let guard = metrics.watch_opened();
        let text = metrics.encode();
        assert!(
            text.contains(r#"apiserver_request_total{verb="GET",resource="pods",code="200"} 1"#),
            "{text}"
        );
        assert!(text.contains("apiserver_request_duration_seconds_bucket"));
        assert!(text.contains("apiserver_registered_watchers 1"));
        drop(guard);
    }
}
