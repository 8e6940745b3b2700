//! The Grafana dashboard in `docs/grafana/` is importable JSON and queries only series the
//! gateway exports (`wxexpress::series::SERIES`, which the metrics process test scrapes).

use serde_json::Value;

fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/grafana/wxexpress-dashboard.json"
    );
    let text = std::fs::read_to_string(path).expect("the dashboard is committed");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every `wxexpress_*` name an expression queries, a histogram's `_bucket`/`_sum`/`_count`
/// read as the histogram.
fn series_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("wxexpress_") {
        let tail = &rest[i..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..len];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| wxexpress::series::SERIES.contains(b))
            .unwrap_or(name);
        out.push(base.to_string());
        rest = &tail[len..];
    }
    out
}

#[test]
fn every_series_the_dashboard_queries_is_exported() {
    let d = dashboard();
    let panels = d["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8);
    let mut queried = Vec::new();
    for p in panels {
        let targets = p["targets"].as_array().expect("every panel queries");
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("a PromQL expression");
            let names = series_in(expr);
            assert!(!names.is_empty(), "{}: {expr}", p["title"]);
            for n in names {
                assert!(
                    wxexpress::series::SERIES.contains(&n.as_str()),
                    "{}: {n} is not exported",
                    p["title"]
                );
                queried.push(n);
            }
        }
    }
    // The panels the operations team asked for are there.
    for s in [
        "wxexpress_events_ingested_total",
        "wxexpress_pushes_total",
        "wxexpress_wechat_calls_total",
        "wxexpress_outbox_entries",
        "wxexpress_outbox_oldest_pending_seconds",
        "wxexpress_callback_duration_seconds",
        "wxexpress_token_refreshes_total",
        "wxexpress_outcomes_total",
        "wxexpress_sms_fallbacks_total",
        "wxexpress_outcome_webhook_lag_seconds",
        "wxexpress_outcome_webhook_failures_total",
        "wxexpress_outcome_webhook_gone",
    ] {
        assert!(queried.iter().any(|q| q == s), "no panel shows {s}");
    }
}

#[test]
fn the_dashboard_imports_with_a_prometheus_data_source_of_the_importers_choice() {
    let d = dashboard();
    assert_eq!(d["__inputs"][0]["pluginId"], "prometheus");
    for p in d["panels"].as_array().expect("panels") {
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
    }
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
}

#[test]
fn the_series_reader_sees_histograms_and_ignores_labels() {
    assert_eq!(
        series_in("histogram_quantile(0.99, sum by (le) (rate(wxexpress_callback_duration_seconds_bucket[5m])))"),
        ["wxexpress_callback_duration_seconds"]
    );
    assert_eq!(
        series_in("sum(wxexpress_pushes_total{outcome=\"x\"}) / wxexpress_nope"),
        ["wxexpress_pushes_total", "wxexpress_nope"]
    );
}
