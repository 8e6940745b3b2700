//! The demo's outcome check: the webhook's items, the feed and the sandbox inbox agree.

use std::collections::BTreeMap;

use serde_json::Value;

use super::setup::API_KEY;
use super::synth;
use crate::outcomes::receiver::Receiver;
use crate::sandbox::Sandbox;

/// What the outcome check found.
pub(super) struct OutcomeCheck {
    pub items: usize,
    pub requests: usize,
    pub sms_receivers: usize,
    pub problems: Vec<String>,
}

/// The webhook's items, the feed (`GET /v1/outcomes`, page by page) and the sandbox inbox
/// must agree exactly: one outcome per outbox entry; the same items in the webhook and the
/// feed; every delivered push in its receiver's inbox and nothing else there; every receiver
/// who is not bound marked for SMS, and no bound one.
pub(super) async fn check(
    http: &reqwest::Client,
    base: &str,
    store: &crate::store::Store,
    receiver: &Receiver,
    sandbox: &Sandbox,
    waybills: &[synth::SynthWaybill],
) -> anyhow::Result<OutcomeCheck> {
    let mut problems = Vec::new();
    let mut feed: BTreeMap<String, Value> = BTreeMap::new();
    let mut url = format!("{base}/v1/outcomes?limit=1000");
    loop {
        let page: Value = http
            .get(&url)
            .bearer_auth(API_KEY)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for item in page["data"].as_array().into_iter().flatten() {
            let id = item["id"].as_str().unwrap_or_default().to_string();
            if feed.insert(id.clone(), item.clone()).is_some() {
                problems.push(format!("the feed handed out {id} twice"));
            }
        }
        if page["has_more"] != true {
            break;
        }
        let next = page["next_cursor"].as_str().unwrap_or_default();
        url = format!("{base}/v1/outcomes?limit=1000&after={next}");
    }
    let sent = receiver.items();
    let entries: i64 = store.outbox_counts().await?.iter().map(|(_, _, n)| n).sum();
    if feed.len() as i64 != entries {
        problems.push(format!(
            "{entries} outbox entries but {} outcomes in the feed",
            feed.len()
        ));
    }
    if sent != feed {
        let missing = feed.keys().filter(|k| !sent.contains_key(*k)).count();
        problems.push(format!(
            "the webhook and the feed disagree ({} sent, {} in the feed, {missing} never sent)",
            sent.len(),
            feed.len()
        ));
    }
    if receiver.refused() > 0 {
        problems.push(format!(
            "{} webhook requests had a bad signature",
            receiver.refused()
        ));
    }
    let mut by_waybill: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for item in sent.values().filter(|i| i["kind"] == "push") {
        by_waybill
            .entry(item["waybill_id"].as_str().unwrap_or_default())
            .or_default()
            .push(item);
    }
    let mut sms_receivers = 0;
    for w in waybills {
        let items = by_waybill.get(w.id.as_str()).cloned().unwrap_or_default();
        let mut delivered: Vec<(i64, i64)> = items
            .iter()
            .filter(|i| i["outcome"] == "delivered")
            .map(|i| {
                (
                    i["action_type"].as_i64().unwrap_or(0),
                    i["action_time"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        delivered.sort_unstable();
        let mut inbox: Vec<(i64, i64)> = sandbox
            .inbox_for_phone(&w.receiver_phone)
            .iter()
            .map(|n| (n.action_type, n.action_time))
            .collect();
        inbox.sort_unstable();
        if delivered != inbox && problems.len() < 20 {
            problems.push(format!(
                "{}: delivered items {delivered:?}, inbox {inbox:?}",
                w.id
            ));
        }
        let sms = items.iter().any(|i| i["sms_fallback"] == true);
        sms_receivers += usize::from(sms);
        if sms == w.bound && problems.len() < 20 {
            problems.push(format!(
                "{}: receiver {} but marked for SMS: {sms}",
                w.id,
                if w.bound { "bound" } else { "not bound" }
            ));
        }
    }
    let requests = receiver
        .received()
        .iter()
        .map(|r| r.webhook_id.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    Ok(OutcomeCheck {
        items: sent.len(),
        requests,
        sms_receivers,
        problems,
    })
}
