//! The demo as a test: a small synthetic day must deliver exactly what it expects, with the
//! injected faults (busy, dropped connections, unreachable callback, token expiry, quota).

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_synthetic_day_delivers_every_expected_notification() {
    let opts = wxexpress::demo::DemoOptions {
        waybills: 60,
        progress: false,
        ..Default::default()
    };
    let report = wxexpress::demo::run(opts).await.expect("the demo runs");
    wxexpress::demo::print_report(&report);
    assert!(report.ok, "{:?}", report.problems);
}
