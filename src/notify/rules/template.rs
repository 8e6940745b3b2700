//! The placeholder language of a rule's values (`"{waybill_id} {action_msg}"`): what each
//! placeholder stands for, which placeholders a keyword type can hold, and rendering.

use crate::notify::values::KeywordType;

/// What a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    WaybillId,
    /// The action type's code, e.g. `300002`.
    ActionType,
    /// A phrase of at most 5 Chinese characters, e.g. `派送中` (`status_phrases`).
    Status,
    /// WeChat's stage name, e.g. `派送阶段-派送中`.
    Stage,
    ActionMsg,
    /// `2024-10-31 21:16`, Beijing time.
    ActionTime,
    /// `2024-10-31`.
    ActionDate,
    /// The waybill's creation, like `ActionTime`.
    CreateTime,
    /// The delivery courier's name, else the pickup courier's.
    Courier,
    CourierPhone,
    SenderCity,
    ReceiverCity,
    /// The freight, `¥19.90`.
    Freight,
    OutTradeNo,
}

pub(super) const FIELDS: &[(&str, Field)] = &[
    ("waybill_id", Field::WaybillId),
    ("action_type", Field::ActionType),
    ("status", Field::Status),
    ("stage", Field::Stage),
    ("action_msg", Field::ActionMsg),
    ("action_time", Field::ActionTime),
    ("action_date", Field::ActionDate),
    ("create_time", Field::CreateTime),
    ("courier", Field::Courier),
    ("courier_phone", Field::CourierPhone),
    ("sender_city", Field::SenderCity),
    ("receiver_city", Field::ReceiverCity),
    ("freight", Field::Freight),
    ("out_trade_no", Field::OutTradeNo),
];

/// Fields whose values are printable ASCII (may be mixed into a `character_string`).
pub(super) const ASCII_FIELDS: &[Field] = &[Field::WaybillId, Field::ActionType, Field::OutTradeNo];

/// One piece of a value template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    Literal(String),
    /// `{field}` or `{field|fallback}`: the fallback stands in when the field is empty.
    Field(Field, Option<String>),
}

/// A value template: literal text with `{placeholders}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueTemplate {
    pub(super) parts: Vec<Part>,
}

impl ValueTemplate {
    /// `{name}` and `{name|fallback}` placeholders; `{{` and `}}` are literal braces.
    pub fn parse(s: &str) -> Result<ValueTemplate, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '}' => return Err("unmatched `}` (write `}}` for a brace)".into()),
                '{' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => return Err("unclosed `{`".into()),
                            Some(c) => inner.push(c),
                        }
                    }
                    let (name, fallback) = match inner.split_once('|') {
                        Some((n, f)) => (n, Some(f.to_string())),
                        None => (inner.as_str(), None),
                    };
                    let field = FIELDS
                        .iter()
                        .find(|(n, _)| *n == name.trim())
                        .map(|(_, f)| *f)
                        .ok_or_else(|| {
                            format!(
                                "unknown placeholder {{{name}}} (known: {})",
                                FIELDS
                                    .iter()
                                    .map(|(n, _)| *n)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        })?;
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Field(field, fallback));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(ValueTemplate { parts })
    }

    pub(super) fn fields(&self) -> impl Iterator<Item = Field> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f, _) => Some(*f),
            Part::Literal(_) => None,
        })
    }

    /// The single field and its fallback when the template is exactly one placeholder.
    pub(super) fn alone(&self) -> Option<(Field, Option<&str>)> {
        match self.parts.as_slice() {
            [Part::Field(f, fb)] => Some((*f, fb.as_deref())),
            _ => None,
        }
    }

    pub(super) fn literal(&self) -> Option<String> {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => Some(l.as_str()),
                Part::Field(..) => None,
            })
            .collect()
    }

    /// The text with each placeholder replaced by `value` of its field (or its fallback when
    /// that is blank).
    pub(super) fn render(&self, value: impl Fn(Field) -> String) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Field(f, fallback) => {
                    let v = value(*f);
                    if v.trim().is_empty() {
                        out.push_str(fallback.as_deref().unwrap_or(""));
                    } else {
                        out.push_str(&v);
                    }
                }
            }
        }
        out
    }
}

/// Which fields a keyword type can hold; `None`: a literal only.
pub(super) fn allowed_fields(kind: KeywordType) -> Option<(&'static [Field], bool)> {
    // (fields, whether the field must stand alone)
    match kind {
        KeywordType::Thing => Some((
            &[
                Field::WaybillId,
                Field::ActionType,
                Field::Status,
                Field::Stage,
                Field::ActionMsg,
                Field::ActionTime,
                Field::ActionDate,
                Field::CreateTime,
                Field::Courier,
                Field::CourierPhone,
                Field::SenderCity,
                Field::ReceiverCity,
                Field::Freight,
                Field::OutTradeNo,
            ],
            false,
        )),
        KeywordType::CharacterString => Some((ASCII_FIELDS, false)),
        KeywordType::Phrase => Some((&[Field::Status], true)),
        KeywordType::Time => Some((&[Field::ActionTime, Field::CreateTime], true)),
        KeywordType::Date => Some((
            &[Field::ActionTime, Field::ActionDate, Field::CreateTime],
            true,
        )),
        KeywordType::Number => Some((&[Field::ActionType], true)),
        KeywordType::Amount => Some((&[Field::Freight], true)),
        KeywordType::PhoneNumber => Some((&[Field::CourierPhone], true)),
        KeywordType::Name => Some((&[Field::Courier], true)),
        KeywordType::Letter | KeywordType::Symbol | KeywordType::CarNumber | KeywordType::Enum => {
            None
        }
    }
}
