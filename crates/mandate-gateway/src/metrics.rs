//! Per-route gateway metrics.
//!
//! Each route's hot series (allowed requests, added and upstream latency) are
//! created with the gateway and kept by route path, so a request only bumps
//! atomics: no label strings are built and no family is locked. Denials,
//! rarer and open-ended in reason, go through the labelled family.

use std::collections::HashMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Decision {
    route: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00001, 2.0, 20))
}

/// One route's series, shared with the families that expose them.
struct RouteSeries {
    allowed: Counter,
    added: Histogram,
    upstream: Histogram,
}

/// Requests by route and decision; guard and upstream latency by route.
pub struct GatewayMetrics {
    registry: Registry,
    decisions: Family<Decision, Counter>,
    /// Looked up three times per request: hashed with foldhash, not SipHash
    /// (the keys are the configuration's route paths).
    routes: HashMap<String, RouteSeries, foldhash::fast::RandomState>,
}

impl GatewayMetrics {
    /// Registers the metrics, with the series of each route in `routes`.
    pub fn new<'a>(routes: impl IntoIterator<Item = &'a str>) -> Self {
        let mut registry = Registry::with_prefix("mandate_gateway");
        let decisions = Family::<Decision, Counter>::default();
        let added =
            Family::<RouteLabel, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let upstream =
            Family::<RouteLabel, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "requests",
            "Gateway requests by route and decision (allow or the denial reason)",
            decisions.clone(),
        );
        registry.register(
            "added_latency_seconds",
            "Time the gateway spent before calling the upstream",
            added.clone(),
        );
        registry.register(
            "upstream_latency_seconds",
            "Upstream time to response headers",
            upstream.clone(),
        );
        let routes = routes
            .into_iter()
            .map(|route| {
                let label = RouteLabel {
                    route: route.to_owned(),
                };
                let series = RouteSeries {
                    allowed: decisions
                        .get_or_create(&Decision {
                            route: route.to_owned(),
                            decision: "allow".to_owned(),
                        })
                        .clone(),
                    added: added.get_or_create(&label).clone(),
                    upstream: upstream.get_or_create(&label).clone(),
                };
                (route.to_owned(), series)
            })
            .collect();
        Self {
            registry,
            decisions,
            routes,
        }
    }

    pub(crate) fn decision(&self, route: &str, decision: &str) {
        if decision == "allow" {
            if let Some(series) = self.routes.get(route) {
                series.allowed.inc();
                return;
            }
        }
        self.decisions
            .get_or_create(&Decision {
                route: route.to_owned(),
                decision: decision.to_owned(),
            })
            .inc();
    }

    // The gateway only reports routes of its table, whose series exist.
    pub(crate) fn added(&self, route: &str, seconds: f64) {
        if let Some(series) = self.routes.get(route) {
            series.added.observe(seconds);
        }
    }

    pub(crate) fn upstream(&self, route: &str, seconds: f64) {
        if let Some(series) = self.routes.get(route) {
            series.upstream.observe(seconds);
        }
    }

    /// Text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
