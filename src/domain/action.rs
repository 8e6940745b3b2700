//! The `action_type` table of WeChat express push (spec §6). Pure data, no I/O.

use serde::{Deserialize, Serialize};

/// One tracking-step code from WeChat's table. Unknown codes are rejected at the edge;
/// carriers map their own unclassified states to [`ActionType::Other`] (500001).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct ActionType(i64);

/// `(code, stage in Chinese, English meaning)`, exactly the spec's table.
pub const ACTION_TYPES: &[(i64, &str, &str)] = &[
    (
        90001,
        "揽件前阶段-网点接单",
        "pre-pickup: outlet accepted the order",
    ),
    (
        90002,
        "揽件前阶段-分配业务员",
        "pre-pickup: courier assigned",
    ),
    (
        90003,
        "揽件前阶段-重新分配业务员",
        "pre-pickup: courier re-assigned",
    ),
    (90010, "揽件前阶段-待支付", "pre-pickup: awaiting payment"),
    (90011, "揽件前阶段-已支付", "pre-pickup: paid"),
    (
        100001,
        "揽件阶段-揽件成功",
        "pickup: picked up successfully",
    ),
    (100002, "揽件阶段-揽件失败", "pickup: pickup failed"),
    (
        200001,
        "运输阶段-更新运输轨迹",
        "transport: transit track update",
    ),
    (300002, "派送阶段-派送中", "delivery: out for delivery"),
    (300003, "派送阶段-签收成功", "delivery: signed for"),
    (300004, "派送阶段-签收失败", "delivery: sign-for failed"),
    (
        300005,
        "派送阶段-第三方代收入库",
        "delivery: stored at a pickup point or locker",
    ),
    (
        300006,
        "派送阶段-第三方代收快递员取出",
        "delivery: courier took it back out of the pickup point",
    ),
    (
        300007,
        "派送阶段-代签收",
        "delivery: signed for on behalf of the receiver",
    ),
    (400001, "异常阶段-订单取消", "exception: order cancelled"),
    (400002, "异常阶段-订单滞留", "exception: order held"),
    (400003, "异常阶段-订单退回", "exception: returned"),
    (
        400004,
        "异常阶段-订单拒收",
        "exception: refused by receiver",
    ),
    (400005, "异常阶段-问题件", "exception: problem parcel"),
    (
        500001,
        "兜底状态-其他未分类状态纳入本action_type",
        "fallback: other unclassified state",
    ),
];

/// Codes accepted on input for a code of the table: (alias, documented code).
pub const ACTION_TYPE_ALIASES: &[(i64, i64)] = &[(300001, 300002)];

/// The schema of an `action_type` on input: every code of the table and every alias,
/// in ascending order (for the OpenAPI document and `schemas/`).
pub fn action_type_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::{schema::Type, ObjectBuilder};
    let mut codes: Vec<i64> = ACTION_TYPES.iter().map(|(c, _, _)| *c).collect();
    codes.extend(ACTION_TYPE_ALIASES.iter().map(|(alias, _)| *alias));
    codes.sort_unstable();
    let aliases: Vec<String> = ACTION_TYPE_ALIASES
        .iter()
        .map(|(a, d)| format!("{a}, accepted as an alias of {d} (WeChat's own traffic uses it) and stored and pushed as {d}"))
        .collect();
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .enum_values(Some(codes))
        .description(Some(format!(
            "WeChat's action_type table, and {}",
            aliases.join("; ")
        )))
        .build()
}

impl ActionType {
    pub const AWAITING_PAYMENT: ActionType = ActionType(90010);
    pub const PAID: ActionType = ActionType(90011);
    pub const PICKED_UP: ActionType = ActionType(100001);
    pub const IN_TRANSIT: ActionType = ActionType(200001);
    pub const OUT_FOR_DELIVERY: ActionType = ActionType(300002);
    pub const SIGNED: ActionType = ActionType(300003);
    pub const OTHER: ActionType = ActionType(500001);

    /// A code as a carrier sends it: a code in the table, or an alias WeChat's own traffic
    /// uses for one. `300001` appears in a captured `add_express_path` push and in the
    /// reverse-query example, but not in the table (spec §11.4); it is read as the documented
    /// `300002` (派送中), which is what gets stored, pushed and answered.
    pub fn from_input(code: i64) -> Option<ActionType> {
        let code = ACTION_TYPE_ALIASES
            .iter()
            .find(|(alias, _)| *alias == code)
            .map_or(code, |(_, documented)| *documented);
        ActionType::parse(code)
    }

    /// Accepts only codes in the table.
    pub fn parse(code: i64) -> Option<ActionType> {
        ACTION_TYPES
            .iter()
            .any(|(c, _, _)| *c == code)
            .then_some(ActionType(code))
    }

    pub fn code(self) -> i64 {
        self.0
    }

    /// The stage name from WeChat's table (for example `派送阶段-派送中`).
    pub fn stage(self) -> &'static str {
        ACTION_TYPES
            .iter()
            .find(|(c, _, _)| *c == self.0)
            .map(|(_, s, _)| *s)
            .expect("an ActionType is only built from a code in the table")
    }

    /// The step's short name, the part of the stage after the dash (for example `派送中`).
    pub fn short_name(self) -> &'static str {
        let stage = self.stage();
        stage.rsplit('-').next().unwrap_or(stage)
    }

    /// Delivery is over once a sign-for (300003/300007) or a terminal exception happened.
    pub fn is_terminal(self) -> bool {
        matches!(self.0, 300003 | 300007 | 400001 | 400003 | 400004)
    }
}

impl TryFrom<i64> for ActionType {
    type Error = String;
    fn try_from(code: i64) -> Result<Self, Self::Error> {
        ActionType::parse(code)
            .ok_or_else(|| format!("{code} is not an action_type in WeChat's table"))
    }
}

impl From<ActionType> for i64 {
    fn from(a: ActionType) -> i64 {
        a.0
    }
}

impl std::fmt::Display for ActionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_codes_from_the_table_parse() {
        assert_eq!(
            ActionType::parse(300002).map(ActionType::code),
            Some(300002)
        );
        assert!(
            ActionType::parse(300001).is_none(),
            "300001 is not in the table"
        );
        assert_eq!(
            ActionType::from_input(300001),
            Some(ActionType::OUT_FOR_DELIVERY),
            "but it is accepted on input as 300002"
        );
        assert_eq!(ActionType::from_input(300003), ActionType::parse(300003));
        assert_eq!(ActionType::from_input(300000), None);
        assert!(ActionType::parse(0).is_none());
        assert_eq!(ACTION_TYPES.len(), 20);
    }

    #[test]
    fn short_name_is_the_step() {
        assert_eq!(ActionType::OUT_FOR_DELIVERY.short_name(), "派送中");
        assert_eq!(ActionType::AWAITING_PAYMENT.short_name(), "待支付");
    }
}
