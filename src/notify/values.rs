//! Keyword values of subscribe messages (spec `wechat-notifications.md` §2.3): each keyword's
//! type, the rule WeChat checks it against, and fitting our data into it, so that our own
//! data never earns a 47003. Pure: no I/O, no clock.
//!
//! Where the spec's table is loose we take the strict reading the sandbox takes too
//! (`docs/SANDBOX.md`): no empty values, "symbols" are ASCII punctuation, dates are
//! `2019-10-01`, `2019/10/01` or `2019年10月1日`, times `15:01` or `15:01:30`.

use chrono::{DateTime, FixedOffset, NaiveDate};

/// A keyword's type: the part of `thing3` before the digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeywordType {
    Thing,
    Number,
    Letter,
    Symbol,
    CharacterString,
    Time,
    Date,
    Amount,
    PhoneNumber,
    CarNumber,
    Name,
    Phrase,
    Enum,
}

impl KeywordType {
    /// `thing3` -> `Thing`; `None` for an unknown type or a key without its number.
    pub fn of_key(key: &str) -> Option<KeywordType> {
        let name = key.trim_end_matches(|c: char| c.is_ascii_digit());
        if name.len() == key.len() {
            return None;
        }
        Some(match name {
            "thing" => KeywordType::Thing,
            "number" => KeywordType::Number,
            "letter" => KeywordType::Letter,
            "symbol" => KeywordType::Symbol,
            "character_string" => KeywordType::CharacterString,
            "time" => KeywordType::Time,
            "date" => KeywordType::Date,
            "amount" => KeywordType::Amount,
            "phone_number" => KeywordType::PhoneNumber,
            "car_number" => KeywordType::CarNumber,
            "name" => KeywordType::Name,
            "phrase" => KeywordType::Phrase,
            "enum" => KeywordType::Enum,
            _ => return None,
        })
    }

    /// What stands in for a value that came out empty, when the type has a neutral one.
    pub fn empty_default(self) -> Option<&'static str> {
        match self {
            KeywordType::Thing => Some("无"),
            KeywordType::CharacterString | KeywordType::PhoneNumber | KeywordType::Name => {
                Some("-")
            }
            KeywordType::Number => Some("0"),
            KeywordType::Phrase => Some("状态更新"),
            _ => None,
        }
    }
}

/// Longest `thing`, in characters.
pub const THING_MAX: usize = 20;
/// Longest `phrase`, in (Chinese) characters.
pub const PHRASE_MAX: usize = 5;
/// Longest value of a legacy template keyword: the retired API published no limit; this
/// keeps a message readable.
pub const LEGACY_MAX: usize = 200;

/// CJK unified ideographs and extension A: what WeChat counts as "Chinese characters".
pub fn is_chinese(c: char) -> bool {
    matches!(c, '\u{4e00}'..='\u{9fff}' | '\u{3400}'..='\u{4dbf}')
}

fn is_symbol(c: char) -> bool {
    c.is_ascii_punctuation()
}

/// Checks `value` against its keyword type's rule.
pub fn check(kind: KeywordType, value: &str) -> Result<(), String> {
    let chars: Vec<char> = value.chars().collect();
    let n = chars.len();
    if n == 0 {
        return Err("is empty".into());
    }
    let ok = match kind {
        KeywordType::Thing => n <= THING_MAX && !chars.iter().any(|c| c.is_control()),
        KeywordType::Number => n <= 32 && is_decimal(value),
        KeywordType::Letter => n <= 32 && chars.iter().all(char::is_ascii_alphabetic),
        KeywordType::Symbol => n <= 5 && chars.iter().all(|c| is_symbol(*c)),
        KeywordType::CharacterString => n <= 32 && chars.iter().all(char::is_ascii_graphic),
        KeywordType::Time => range(value, is_time_value),
        KeywordType::Date => range(value, is_date_value),
        KeywordType::Amount => is_amount(value),
        KeywordType::PhoneNumber => {
            n <= 17 && chars.iter().all(|c| c.is_ascii_digit() || is_symbol(*c))
        }
        KeywordType::CarNumber => {
            n <= 8
                && chars.iter().enumerate().all(|(i, c)| {
                    c.is_ascii_alphanumeric() || ((i == 0 || i == n - 1) && is_chinese(*c))
                })
        }
        KeywordType::Name => {
            if chars.iter().any(|c| is_chinese(*c)) {
                n <= 10
                    && chars.iter().all(|c| {
                        is_chinese(*c) || c.is_ascii_alphabetic() || is_symbol(*c) || *c == '·'
                    })
            } else {
                n <= 20
                    && chars
                        .iter()
                        .all(|c| c.is_ascii_alphabetic() || is_symbol(*c) || *c == ' ')
            }
        }
        KeywordType::Phrase => n <= PHRASE_MAX && chars.iter().all(|c| is_chinese(*c)),
        KeywordType::Enum => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("is not a valid {} value", type_name(kind)))
    }
}

fn type_name(kind: KeywordType) -> &'static str {
    match kind {
        KeywordType::Thing => "thing (at most 20 characters)",
        KeywordType::Number => "number (at most 32 digits)",
        KeywordType::Letter => "letter (at most 32 letters)",
        KeywordType::Symbol => "symbol (at most 5 symbols)",
        KeywordType::CharacterString => "character_string (at most 32 letters, digits, symbols)",
        KeywordType::Time => "time (24-hour time, optionally after a date)",
        KeywordType::Date => "date (a date, optionally with a 24-hour time)",
        KeywordType::Amount => "amount (currency symbol and at most 10 digits)",
        KeywordType::PhoneNumber => "phone_number (at most 17 digits and symbols)",
        KeywordType::CarNumber => "car_number (licence plate, at most 8 characters)",
        KeywordType::Name => "name (10 Chinese or 20 Latin characters)",
        KeywordType::Phrase => "phrase (at most 5 Chinese characters)",
        KeywordType::Enum => "enum",
    }
}

/// Makes `raw` a valid value of `kind`, or `None` when no faithful value can be made (a
/// phone number too long to be one, a malformed time). Text is shortened cleanly, never cut
/// mid-character; characters the type does not allow are dropped.
pub fn fit(kind: KeywordType, raw: &str) -> Option<String> {
    let fitted = match kind {
        KeywordType::Thing => shorten(&one_line(raw), THING_MAX),
        KeywordType::Phrase => raw
            .chars()
            .filter(|c| is_chinese(*c))
            .take(PHRASE_MAX)
            .collect(),
        KeywordType::CharacterString => raw
            .chars()
            .filter(char::is_ascii_graphic)
            .take(32)
            .collect(),
        KeywordType::Letter => raw
            .chars()
            .filter(char::is_ascii_alphabetic)
            .take(32)
            .collect(),
        KeywordType::Symbol => raw.chars().filter(|c| is_symbol(*c)).take(5).collect(),
        KeywordType::Number => {
            let mut seen_point = false;
            raw.chars()
                .filter(|c| {
                    let keep = c.is_ascii_digit() || (*c == '.' && !seen_point);
                    seen_point |= *c == '.';
                    keep
                })
                .take(32)
                .collect::<String>()
                .trim_matches('.')
                .to_string()
        }
        KeywordType::PhoneNumber => raw
            .chars()
            .filter(|c| c.is_ascii_digit() || is_symbol(*c))
            .collect(),
        KeywordType::Name => {
            let line = one_line(raw);
            if line.chars().any(is_chinese) {
                line.chars()
                    .filter(|c| {
                        is_chinese(*c) || c.is_ascii_alphabetic() || is_symbol(*c) || *c == '·'
                    })
                    .take(10)
                    .collect()
            } else {
                let kept: String = line
                    .chars()
                    .filter(|c| c.is_ascii_alphabetic() || is_symbol(*c) || *c == ' ')
                    .take(20)
                    .collect();
                kept.trim().to_string()
            }
        }
        KeywordType::Time
        | KeywordType::Date
        | KeywordType::Amount
        | KeywordType::CarNumber
        | KeywordType::Enum => raw.trim().to_string(),
    };
    check(kind, &fitted).ok().map(|()| fitted)
}

/// A legacy template keyword: free text on one line, at most [`LEGACY_MAX`] characters.
pub fn fit_legacy(raw: &str) -> String {
    shorten(&one_line(raw), LEGACY_MAX)
}

/// Control characters and runs of whitespace become one space; trimmed.
fn one_line(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c.is_whitespace() && out.ends_with(|p: char| p.is_whitespace()) {
            continue;
        }
        out.push(if c.is_whitespace() { ' ' } else { c });
    }
    out.trim().to_string()
}

/// Separators a shortened text may end before (the clause before them reads as a whole).
const SEPARATORS: &[char] = &[
    '，', '。', '；', '、', '！', '？', ',', '.', ';', '!', '?', ' ', '：', ':',
];
const OPENING: &[(char, char)] = &[
    ('【', '】'),
    ('（', '）'),
    ('(', ')'),
    ('[', ']'),
    ('「', '」'),
    ('《', '》'),
];

/// Shortens `text` to at most `max` characters, ending with `…` when something was cut:
/// at the last separator in the second half of the window if there is one, before a bracket
/// the cut would leave open, and without dangling punctuation.
pub fn shorten(text: &str, max: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max {
        return text.to_string();
    }
    if max <= 1 {
        return "…".chars().take(max).collect();
    }
    let window = &chars[..max - 1];
    let half = max / 2;
    let mut end = window.len();
    if let Some(i) = window.iter().rposition(|c| SEPARATORS.contains(c)) {
        if i >= half {
            end = i;
        }
    }
    // A bracket opened and not closed within the cut: end before it, if enough remains.
    for (open, close) in OPENING {
        let kept = &window[..end];
        if let Some(i) = kept.iter().rposition(|c| c == open) {
            if !kept[i..].contains(close) && i >= half {
                end = i;
            }
        }
    }
    let mut kept: String = window[..end].iter().collect();
    while kept.ends_with(|c: char| {
        c.is_whitespace() || SEPARATORS.contains(&c) || OPENING.iter().any(|(o, _)| *o == c)
    }) {
        kept.pop();
    }
    if kept.is_empty() {
        kept = window.iter().collect();
    }
    kept.push('…');
    kept
}

/// Beijing time (UTC+8): WeChat users read times as their own clock.
fn beijing(unix_s: i64) -> Option<DateTime<FixedOffset>> {
    let tz = FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
    DateTime::from_timestamp(unix_s, 0).map(|t| t.with_timezone(&tz))
}

/// `2024-10-31 21:16`, Beijing time: valid for both `time` and `date` keywords.
pub fn format_time(unix_s: i64) -> String {
    beijing(unix_s)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// `2024-10-31`, Beijing time: valid for `date` keywords.
pub fn format_date(unix_s: i64) -> String {
    beijing(unix_s)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// `¥19.90` from fen.
pub fn format_amount(fen: i64) -> String {
    format!("¥{}.{:02}", fen / 100, (fen % 100).abs())
}

fn is_decimal(s: &str) -> bool {
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    !int.is_empty()
        && !frac.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

fn is_amount(s: &str) -> bool {
    let s = s.strip_suffix('元').unwrap_or(s);
    let s = s.strip_prefix(['¥', '￥', '$', '€', '£']).unwrap_or(s);
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    (1..=10).contains(&digits) && is_decimal(s)
}

fn range(value: &str, one: fn(&str) -> bool) -> bool {
    let mut parts = value.split('~');
    let first = parts.next().map(str::trim).is_some_and(one);
    let rest: Vec<&str> = parts.collect();
    first && rest.len() <= 1 && rest.iter().all(|p| one(p.trim()))
}

fn is_time_value(s: &str) -> bool {
    match s.rsplit_once(' ') {
        Some((date, time)) => is_date(date.trim()) && is_clock(time),
        None => is_clock(s) || is_chinese_date_time(s),
    }
}

fn is_date_value(s: &str) -> bool {
    match s.rsplit_once(' ') {
        Some((date, time)) => is_date(date.trim()) && is_clock(time),
        None => is_date(s) || is_chinese_date_time(s),
    }
}

fn is_chinese_date_time(s: &str) -> bool {
    s.split_once('日')
        .is_some_and(|(d, t)| is_date(&format!("{d}日")) && is_clock(t))
}

fn is_clock(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |p: &str, max: u32| p.len() == 2 && p.parse::<u32>().is_ok_and(|v| v <= max);
    match parts.as_slice() {
        [h, m] => num(h, 23) && num(m, 59),
        [h, m, sec] => num(h, 23) && num(m, 59) && num(sec, 59),
        _ => false,
    }
}

fn is_date(s: &str) -> bool {
    let parts: Option<(&str, &str, &str)> = if let Some(rest) = s.strip_suffix('日') {
        rest.split_once('年').and_then(|(y, md)| {
            let (m, d) = md.split_once('月')?;
            Some((y, m, d))
        })
    } else {
        let sep = if s.contains('-') { '-' } else { '/' };
        let mut it = s.split(sep);
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(y), Some(m), Some(d), None) => Some((y, m, d)),
            _ => None,
        }
    };
    let Some((y, m, d)) = parts else {
        return false;
    };
    let num = |p: &str, max_len: usize| {
        (1..=max_len).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
    };
    if y.len() != 4 || !num(y, 4) || !num(m, 2) || !num(d, 2) {
        return false;
    }
    match (y.parse::<i32>(), m.parse::<u32>(), d.parse::<u32>()) {
        (Ok(y), Ok(m), Ok(d)) => NaiveDate::from_ymd_opt(y, m, d).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::values as wechat;
    use proptest::prelude::*;

    const ALL: [KeywordType; 13] = [
        KeywordType::Thing,
        KeywordType::Number,
        KeywordType::Letter,
        KeywordType::Symbol,
        KeywordType::CharacterString,
        KeywordType::Time,
        KeywordType::Date,
        KeywordType::Amount,
        KeywordType::PhoneNumber,
        KeywordType::CarNumber,
        KeywordType::Name,
        KeywordType::Phrase,
        KeywordType::Enum,
    ];

    fn key_of(kind: KeywordType) -> &'static str {
        match kind {
            KeywordType::Thing => "thing1",
            KeywordType::Number => "number1",
            KeywordType::Letter => "letter1",
            KeywordType::Symbol => "symbol1",
            KeywordType::CharacterString => "character_string1",
            KeywordType::Time => "time1",
            KeywordType::Date => "date1",
            KeywordType::Amount => "amount1",
            KeywordType::PhoneNumber => "phone_number1",
            KeywordType::CarNumber => "car_number1",
            KeywordType::Name => "name1",
            KeywordType::Phrase => "phrase1",
            KeywordType::Enum => "enum1",
        }
    }

    /// The emulator's independent reading of the same table.
    fn wechat_accepts(kind: KeywordType, value: &str) -> bool {
        let k = wechat::KeywordType::of_key(key_of(kind)).expect("same keys");
        wechat::check(k, value, None).is_ok()
    }

    #[test]
    fn an_over_long_action_msg_becomes_a_clean_thing() {
        let msg = "【深圳市】快件已到达深圳转运中心，下一站泉州集散中心，预计明天送达";
        let t = fit(KeywordType::Thing, msg).unwrap();
        assert_eq!(t, "【深圳市】快件已到达深圳转运中心…");
        assert!(t.chars().count() <= THING_MAX);
        assert!(wechat_accepts(KeywordType::Thing, &t));
    }

    #[test]
    fn shortening_never_leaves_an_open_bracket_or_dangling_punctuation() {
        assert_eq!(
            shorten(
                "快件已由快递员张三揽收，联系电话【13800138000】请保持畅通",
                20
            ),
            "快件已由快递员张三揽收…"
        );
        assert_eq!(
            shorten("abcdefghijklmnopqrstuvwxyz", 20),
            "abcdefghijklmnopqrs…"
        );
        assert_eq!(shorten("短消息", 20), "短消息");
        assert_eq!(
            shorten("a\u{7}b", 20),
            "a\u{7}b",
            "shorten does not clean; fit does"
        );
        assert_eq!(fit(KeywordType::Thing, "a\n\tb").unwrap(), "a b");
    }

    #[test]
    fn statuses_times_and_amounts_are_formatted_as_wechat_accepts() {
        // 2024-10-31 13:16 UTC = 21:16 in Beijing.
        assert_eq!(format_time(1_730_380_560), "2024-10-31 21:16");
        assert_eq!(format_date(1_730_380_560), "2024-10-31");
        assert_eq!(format_amount(1990), "¥19.90");
        assert_eq!(format_amount(5), "¥0.05");
        for (kind, v) in [
            (KeywordType::Time, format_time(1_730_380_560)),
            (KeywordType::Date, format_time(1_730_380_560)),
            (KeywordType::Date, format_date(1_730_380_560)),
            (KeywordType::Amount, format_amount(1990)),
        ] {
            assert!(check(kind, &v).is_ok(), "{v}");
            assert!(wechat_accepts(kind, &v), "{v}");
        }
        assert_eq!(
            fit(KeywordType::Phrase, "派送中").as_deref(),
            Some("派送中")
        );
        assert_eq!(
            fit(KeywordType::Phrase, "第三方代收入库").as_deref(),
            Some("第三方代收")
        );
        assert_eq!(fit(KeywordType::Phrase, "delivered"), None);
    }

    #[test]
    fn values_that_cannot_be_made_faithful_are_refused() {
        assert_eq!(
            fit(KeywordType::PhoneNumber, "0086-0755-1234567890123"),
            None
        );
        assert_eq!(fit(KeywordType::Time, "tomorrow"), None);
        assert_eq!(fit(KeywordType::Amount, "19.9"), Some("19.9".into()));
        assert_eq!(
            fit(KeywordType::CharacterString, "SF 1234 5678").as_deref(),
            Some("SF12345678")
        );
        assert_eq!(
            fit(KeywordType::Name, "张三 13800138000").as_deref(),
            Some("张三")
        );
        assert_eq!(
            fit(KeywordType::Number, "300002").as_deref(),
            Some("300002")
        );
    }

    #[test]
    fn literal_checks_follow_the_table() {
        assert!(check(KeywordType::Date, "2019年10月1日").is_ok());
        assert!(check(KeywordType::Time, "2019年10月1日 15:01").is_ok());
        assert!(check(KeywordType::Time, "15:01~16:00").is_ok());
        assert!(check(KeywordType::Date, "2019-02-30").is_err());
        assert!(check(KeywordType::CarNumber, "粤A8Z888挂").is_ok());
        assert!(check(KeywordType::Phrase, "运输中").is_ok());
        assert!(check(KeywordType::Phrase, "运输中了吗呀").is_err());
        assert!(check(KeywordType::Symbol, "-").is_ok());
        assert!(check(KeywordType::Thing, "").is_err());
    }

    #[test]
    fn every_empty_default_is_valid_for_its_type() {
        for kind in ALL {
            if let Some(d) = kind.empty_default() {
                assert!(check(kind, d).is_ok(), "{kind:?}");
                assert!(wechat_accepts(kind, d), "{kind:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn whatever_fit_returns_passes_our_check_and_the_emulators(raw in "\\PC{0,60}|[0-9 .:~年月日-]{0,24}|[A-Za-z0-9 ]{0,40}") {
            for kind in ALL {
                if let Some(v) = fit(kind, &raw) {
                    prop_assert!(check(kind, &v).is_ok(), "{:?} {:?}", kind, v);
                    if kind != KeywordType::Enum {
                        prop_assert!(wechat_accepts(kind, &v), "{:?} {:?}", kind, v);
                    }
                }
            }
        }

        #[test]
        fn a_thing_is_never_longer_than_twenty_characters(raw in "\\PC{0,200}") {
            if let Some(v) = fit(KeywordType::Thing, &raw) {
                prop_assert!(v.chars().count() <= THING_MAX);
            }
        }
    }
}
