//! Subscribe-message `data` values: the keyword types and their limits (spec
//! `wechat-notifications.md` §2.3). Pure. A value that breaks its type's rule is what WeChat
//! answers 47003 for.
//!
//! Where the table is loose the strict reading is taken (listed in `docs/SANDBOX.md`): values
//! must not be empty, "symbols" are ASCII punctuation, dates are `2019年10月1日`,
//! `2019-10-01` or `2019/10/01`, and times `15:01` or `15:01:30`.

/// A keyword's type: the part of `thing2` before the digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// `thing2` -> `Thing`; `None` for an unknown type or a key without its index.
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
}

fn is_chinese(c: char) -> bool {
    matches!(c, '\u{4e00}'..='\u{9fff}' | '\u{3400}'..='\u{4dbf}')
}

fn is_symbol(c: char) -> bool {
    c.is_ascii_punctuation()
}

/// Checks `value` against its keyword type. `enum_values` is the template's list for an
/// `enum` keyword.
pub fn check(kind: KeywordType, value: &str, enum_values: Option<&[String]>) -> Result<(), String> {
    let chars: Vec<char> = value.chars().collect();
    let n = chars.len();
    if n == 0 {
        return Err("is empty".into());
    }
    let fail = |why: &str| Err(why.to_string());
    match kind {
        KeywordType::Thing => {
            if n > 20 {
                return fail("thing: more than 20 characters");
            }
            if chars.iter().any(|c| c.is_control()) {
                return fail("thing: control characters");
            }
        }
        KeywordType::Number => {
            if n > 32 || !is_decimal(value) {
                return fail("number: not a number of at most 32 digits");
            }
        }
        KeywordType::Letter => {
            if n > 32 || !chars.iter().all(char::is_ascii_alphabetic) {
                return fail("letter: not at most 32 letters");
            }
        }
        KeywordType::Symbol => {
            if n > 5 || !chars.iter().all(|c| is_symbol(*c)) {
                return fail("symbol: not at most 5 symbols");
            }
        }
        KeywordType::CharacterString => {
            if n > 32 || !chars.iter().all(char::is_ascii_graphic) {
                return fail("character_string: not at most 32 letters, digits and symbols");
            }
        }
        KeywordType::Time => {
            if !range(value, is_time_value) {
                return fail(
                    "time: not a 24-hour time, optionally with a date, or a range of those",
                );
            }
        }
        KeywordType::Date => {
            if !range(value, is_date_value) {
                return fail(
                    "date: not a date, optionally with a 24-hour time, or a range of those",
                );
            }
        }
        KeywordType::Amount => {
            if !is_amount(value) {
                return fail("amount: not a currency symbol and at most 10 digits");
            }
        }
        KeywordType::PhoneNumber => {
            if n > 17 || !chars.iter().all(|c| c.is_ascii_digit() || is_symbol(*c)) {
                return fail("phone_number: not at most 17 digits and symbols");
            }
        }
        KeywordType::CarNumber => {
            let inner_ok = chars.iter().enumerate().all(|(i, c)| {
                c.is_ascii_alphanumeric() || ((i == 0 || i == n - 1) && is_chinese(*c))
            });
            if n > 8 || !inner_ok {
                return fail("car_number: not a licence plate of at most 8 characters");
            }
        }
        KeywordType::Name => {
            let ok = if chars.iter().any(|c| is_chinese(*c)) {
                n <= 10
                    && chars.iter().all(|c| {
                        is_chinese(*c) || c.is_ascii_alphabetic() || is_symbol(*c) || *c == '·'
                    })
            } else {
                n <= 20
                    && chars
                        .iter()
                        .all(|c| c.is_ascii_alphabetic() || is_symbol(*c) || *c == ' ')
            };
            if !ok {
                return fail("name: not at most 10 Chinese characters or 20 letters");
            }
        }
        KeywordType::Phrase => {
            if n > 5 || !chars.iter().all(|c| is_chinese(*c)) {
                return fail("phrase: not at most 5 Chinese characters");
            }
        }
        KeywordType::Enum => {
            if !enum_values.is_some_and(|vs| vs.iter().any(|v| v == value)) {
                return fail("enum: not one of the template's values");
            }
        }
    }
    Ok(())
}

fn is_decimal(s: &str) -> bool {
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(int) && digits(frac)
}

fn is_amount(s: &str) -> bool {
    let s = s.strip_suffix('元').unwrap_or(s);
    let s = s.strip_prefix(['¥', '￥', '$', '€', '£']).unwrap_or(s);
    let digit_count = s.bytes().filter(u8::is_ascii_digit).count();
    is_decimal(s) && digit_count <= 10
}

/// `a` or `a~b`, each side passing `one`.
fn range(s: &str, one: fn(&str) -> bool) -> bool {
    match s.split_once('~') {
        Some((a, b)) => one(a.trim()) && one(b.trim()),
        None => one(s.trim()),
    }
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

/// `2019年10月1日15:01`: the Chinese form may omit the space.
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
        rest.split_once('年')
            .and_then(|(y, md)| md.split_once('月').map(|(m, d)| (y, m, d)))
    } else {
        let sep = if s.contains('-') { '-' } else { '/' };
        let v: Vec<&str> = s.split(sep).collect();
        match v.as_slice() {
            [y, m, d] => Some((*y, *m, *d)),
            _ => None,
        }
    };
    let Some((y, m, d)) = parts else { return false };
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<i32>(), m.parse::<u32>(), d.parse::<u32>()) else {
        return false;
    };
    (1000..=9999).contains(&y) && chrono::NaiveDate::from_ymd_opt(y, m, d).is_some()
}

#[cfg(test)]
mod tests {
    use super::KeywordType as K;
    use super::*;

    #[test]
    fn keys_name_their_type() {
        assert_eq!(
            KeywordType::of_key("character_string1"),
            Some(K::CharacterString)
        );
        assert_eq!(KeywordType::of_key("thing12"), Some(K::Thing));
        assert_eq!(KeywordType::of_key("thing"), None);
        assert_eq!(KeywordType::of_key("keyword1"), None);
    }

    #[test]
    fn the_spec_examples_pass() {
        for (k, v) in [
            (K::Thing, "快件到达泉州磁灶集散中心"),
            (K::CharacterString, "1234567890"),
            (K::Phrase, "运输中"),
            (K::Phrase, "审核通过"),
            (K::Name, "订阅"),
            (K::Date, "2019-12-25 09:42"),
            (K::Time, "15:01"),
            (K::Time, "2019年10月1日 15:01"),
            (K::Time, "2020年08月14日 17:08"),
            (K::Date, "2019年10月1日"),
            (K::Amount, "¥12.50"),
            (K::Amount, "12.50元"),
            (K::PhoneNumber, "+86-0766-66888866"),
            (K::CarNumber, "粤A8Z888挂"),
            (K::Number, "3.14"),
            (K::Letter, "abc"),
            (K::Symbol, "%"),
            (K::Time, "09:00~18:00"),
        ] {
            assert_eq!(check(k, v, None), Ok(()), "{k:?} {v}");
        }
    }

    #[test]
    fn values_over_their_limits_fail() {
        for (k, v) in [
            (K::Thing, "一二三四五六七八九十一二三四五六七八九十一"),
            (K::Thing, ""),
            (K::Number, "12a"),
            (K::Letter, "ab1"),
            (K::Symbol, "%%%%%%"),
            (K::CharacterString, "中文"),
            (K::Time, "25:00"),
            (K::Date, "2019-02-30"),
            (K::Amount, "¥12345678901"),
            (K::PhoneNumber, "138001380001380013"),
            (K::CarNumber, "粤A8Z888挂X"),
            (K::Name, "张三李四王五赵六钱七孙"),
            (K::Phrase, "运输中的快件"),
            (K::Phrase, "abc"),
        ] {
            assert!(check(k, v, None).is_err(), "{k:?} {v} should fail");
        }
    }

    #[test]
    fn enum_values_come_from_the_template() {
        let vs = vec!["已发货".to_string()];
        assert!(check(K::Enum, "已发货", Some(&vs)).is_ok());
        assert!(check(K::Enum, "已签收", Some(&vs)).is_err());
        assert!(check(K::Enum, "已发货", None).is_err());
    }
}
