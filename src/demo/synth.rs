//! A realistic synthetic day of waybills (pure: no I/O). Each waybill gets a real event
//! sequence; some get perturbations a carrier really sees: a late scan (stale when it
//! arrives), a repeated scan (duplicate), two steps in one upload (coalesced). The model
//! also computes what WeChat users must end up with, so the demo can check it exactly.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// One tracking event as the carrier sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub action_type: i64,
    pub action_time: i64,
    pub action_msg: String,
    pub courier: Option<(String, String)>,
}

/// What the sender allowed the carrier's mini program to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    /// Accepted this many one-time subscriptions.
    Subscribed(u32),
    /// Paid the freight in the mini program: a prepay_id (three legacy messages).
    PrepayId,
    None,
}

/// One waybill of the day, with the upload round of each of its events.
#[derive(Debug, Clone)]
pub struct SynthWaybill {
    pub id: String,
    pub sender_openid: String,
    pub sender_consent: Consent,
    pub receiver_phone: String,
    pub sender_phone: String,
    pub bound: bool,
    pub create_time: i64,
    /// (round, step) in upload order.
    pub uploads: Vec<(usize, Step)>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Perturbations {
    pub late: usize,
    pub duplicate: usize,
    pub burst: usize,
}

const HUBS: &[&str] = &[
    "杭州转运中心",
    "上海浦东集散中心",
    "广州白云分拨中心",
    "泉州磁灶集散中心",
    "武汉东西湖中转场",
    "成都双流分拨中心",
    "北京顺义转运中心",
];
const NAMES: &[&str] = &["王师傅", "李师傅", "张师傅", "陈师傅", "刘师傅"];
const CITIES: &[(&str, &str, &str)] = &[
    ("浙江省", "杭州市", "西湖区"),
    ("广东省", "深圳市", "南山区"),
    ("福建省", "泉州市", "晋江市"),
    ("北京市", "北京市", "朝阳区"),
    ("四川省", "成都市", "武侯区"),
];

/// A courier's name and phone.
type Courier = (String, String);

fn courier(rng: &mut StdRng) -> Courier {
    (
        NAMES[rng.gen_range(0..NAMES.len())].to_string(),
        format!(
            "13{}{:08}",
            rng.gen_range(5..10),
            rng.gen_range(0..100_000_000u32)
        ),
    )
}

/// The plain event sequence of one parcel, times increasing from `t0`.
fn sequence(rng: &mut StdRng, t0: i64) -> Vec<Step> {
    let pickup = courier(rng);
    let delivery = courier(rng);
    let mut plan: Vec<(i64, String, Option<Courier>)> = vec![
        (
            90002,
            format!("已分配揽件员 {} {}", pickup.0, pickup.1),
            Some(pickup.clone()),
        ),
        (100001, format!("{}已揽件", pickup.0), Some(pickup)),
    ];
    for _ in 0..rng.gen_range(1..=3) {
        plan.push((
            200001,
            format!("快件到达 【{}】", HUBS[rng.gen_range(0..HUBS.len())]),
            None,
        ));
    }
    let kind = rng.gen_range(0..100);
    if kind < 10 {
        plan.push((400002, "快件滞留：收件人要求延期派送".into(), None));
    }
    plan.push((
        300002,
        format!("派送中，派件员{} {}", delivery.0, delivery.1),
        Some(delivery.clone()),
    ));
    if kind < 6 {
        plan.push((400004, "收件人拒收".into(), None));
        plan.push((400003, "快件退回寄件人".into(), None));
    } else if kind < 20 {
        plan.push((300005, "已放入【丰巢智能柜】，请凭取件码取件".into(), None));
        plan.push((300003, "已取件，感谢使用".into(), None));
    } else {
        plan.push((300003, "已签收，签收人：本人".into(), Some(delivery)));
    }
    let mut t = t0;
    plan.into_iter()
        .map(|(action_type, action_msg, courier)| {
            t += rng.gen_range(600..7200);
            Step {
                action_type,
                action_time: t,
                action_msg,
                courier,
            }
        })
        .collect()
}

/// Generate `n` waybills. `bound_ratio` of receivers have bound their phone in WeChat.
pub fn generate(
    n: usize,
    seed: u64,
    bound_ratio: f64,
    day_start: i64,
) -> (Vec<SynthWaybill>, Perturbations) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut p = Perturbations::default();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let create_time = day_start + rng.gen_range(0..3600);
        let seq = sequence(&mut rng, create_time);
        let mut uploads: Vec<(usize, Step)> = seq.iter().cloned().enumerate().collect();
        let roll = rng.gen_range(0..100);
        if roll < 5 && uploads.len() > 4 {
            // A transit scan uploaded one round late, after the next step was pushed.
            uploads[2].0 = 3;
            uploads[3].0 = 2;
            p.late += 1;
        } else if roll < 10 {
            // The scanner re-uploads an event in the next round.
            let k = rng.gen_range(0..uploads.len());
            let dup = (uploads[k].0 + 1, uploads[k].1.clone());
            uploads.push(dup);
            p.duplicate += 1;
        } else if roll < 15 && uploads.len() > 4 {
            // Two steps arrive in one upload: only the newer is pushed.
            let k = rng.gen_range(1..uploads.len() - 1);
            for u in uploads.iter_mut().skip(k) {
                u.0 -= 1;
            }
            p.burst += 1;
        }
        uploads.sort_by_key(|(round, s)| (*round, s.action_time));
        let consent = match rng.gen_range(0..10) {
            0..=4 => Consent::Subscribed(2),
            5..=7 => Consent::PrepayId,
            _ => Consent::None,
        };
        out.push(SynthWaybill {
            id: format!("SF{:010}", 7_000_000_000u64 + i as u64),
            sender_openid: format!("oDemoSender{i:08}"),
            sender_consent: consent,
            receiver_phone: format!("139{:08}", i),
            sender_phone: format!("137{:08}", rng.gen_range(0..100_000_000u32)),
            bound: rng.gen_bool(bound_ratio),
            create_time,
            uploads,
        });
    }
    (out, p)
}

impl SynthWaybill {
    /// What the receiver's WeChat must show, oldest first, given that each round is fully
    /// pushed before the next one and that waiting events of one waybill are coalesced.
    pub fn expected_inbox(&self) -> Vec<(i64, i64)> {
        if !self.bound {
            return Vec::new();
        }
        let mut seen = std::collections::HashSet::new();
        let mut last: Option<i64> = None;
        let mut out = Vec::new();
        let rounds = self.uploads.iter().map(|(r, _)| *r).max().unwrap_or(0);
        for round in 0..=rounds {
            let newest = self
                .uploads
                .iter()
                .filter(|(r, _)| *r == round)
                .map(|(_, s)| s)
                .filter(|s| seen.insert((s.action_type, s.action_time)))
                .max_by_key(|s| s.action_time);
            if let Some(s) = newest {
                if last.is_none_or(|l| s.action_time > l) {
                    out.push((s.action_type, s.action_time));
                    last = Some(s.action_time);
                }
            }
        }
        out
    }

    pub fn rounds(&self) -> usize {
        self.uploads.iter().map(|(r, _)| *r + 1).max().unwrap_or(0)
    }

    /// NDJSON lines of one round (the first carries the waybill itself).
    pub fn lines(&self, round: usize) -> Vec<Value> {
        self.uploads
            .iter()
            .filter(|(r, _)| *r == round)
            .map(|(_, s)| {
                // The backoffice's own id for the scan (its SMS job), echoed on the outcome.
                let scan_ref = format!("sms-{}-{}-{}", self.id, s.action_type, s.action_time);
                let mut ev = json!({ "action_type": s.action_type, "action_time": s.action_time, "action_msg": s.action_msg, "ref": scan_ref });
                if let Some((name, phone)) = &s.courier {
                    let (kn, kp) = if s.action_type < 300000 { ("pickup_courier_name", "pickup_courier_phone") } else { ("delivery_courier_name", "delivery_courier_phone") };
                    ev[kn] = json!(name);
                    ev[kp] = json!(phone);
                }
                json!({ "waybill_id": self.id, "waybill": self.waybill_json(), "event": ev })
            })
            .collect()
    }

    fn waybill_json(&self) -> Value {
        let (sp, sc, sa) = CITIES[self.id.len() % CITIES.len()];
        let (rp, rc, ra) = CITIES[(self.receiver_phone.as_bytes()[10] as usize) % CITIES.len()];
        json!({
            "create_time": self.create_time,
            "sender": { "name": "寄件人", "phone": self.sender_phone, "province": sp, "city": sc, "area": sa, "address": "科技园路1号" },
            "receiver": { "name": "收件人", "phone": self.receiver_phone, "province": rp, "city": rc, "area": ra, "address": "人民路88号" },
            "openids": { "sender": self.sender_openid },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_ordered_and_use_table_codes() {
        let (w, _) = generate(200, 1, 0.9, 1_700_000_000);
        for wb in &w {
            let mut steps: Vec<&Step> = wb.uploads.iter().map(|(_, s)| s).collect();
            steps.sort_by_key(|s| s.action_time);
            assert!(steps
                .iter()
                .all(|s| crate::domain::ActionType::parse(s.action_type).is_some()));
        }
    }

    #[test]
    fn the_expected_inbox_drops_stale_duplicate_and_coalesced_steps() {
        let s = |t: i64, at: i64| Step {
            action_type: t,
            action_time: at,
            action_msg: String::new(),
            courier: None,
        };
        let wb = SynthWaybill {
            id: "X".into(),
            sender_openid: "oX".into(),
            sender_consent: Consent::None,
            receiver_phone: "13900000000".into(),
            sender_phone: "13700000000".into(),
            bound: true,
            create_time: 0,
            uploads: vec![
                (0, s(100001, 10)),
                (1, s(200001, 30)),
                (2, s(200001, 20)),
                (2, s(300002, 40)),
                (3, s(300002, 40)),
                (4, s(300003, 50)),
                (4, s(300005, 45)),
            ],
        };
        assert_eq!(
            wb.expected_inbox(),
            vec![(100001, 10), (200001, 30), (300002, 40), (300003, 50)]
        );
    }
}
