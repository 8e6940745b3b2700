//! Phone numbers as carriers really see them, and how they are masked.
//!
//! Accepted forms (normalised at the edge, so the text we push to WeChat and the text we
//! compare in the reverse query are the same bytes):
//! - mainland mobile: `13800138000` (a leading `+86`/`86`/`0086`, spaces and dashes are dropped);
//! - mobile with an extension, as privacy ("virtual") numbers are printed on labels:
//!   `13800138000-1234` (also written `13800138000转1234`, `13800138000,1234`);
//! - landline with area code and optional extension: `010-12345678`, `0755-1234567-801`.
//!
//! A `Phone` never prints its digits through `Debug`; use [`Phone::masked`] for display and
//! [`Phone::as_str`] only where the plaintext is needed (pushing to WeChat).

use std::fmt;

/// A validated, normalised phone number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("is empty")]
    Empty,
    #[error("is longer than 32 characters")]
    TooLong,
    #[error("is not a mainland mobile number, a landline with area code, or one of those with an extension")]
    Format,
}

impl Phone {
    pub fn parse(input: &str) -> Result<Phone, PhoneError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(PhoneError::Empty);
        }
        if s.chars().count() > 32 {
            return Err(PhoneError::TooLong);
        }
        // Split off an extension first: `转`, `,`, `#`, `ext`, or the last dash after a full number.
        let (main, ext) = split_extension(s);
        let mut digits: String = main
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
            .collect();
        if let Some(rest) = digits.strip_prefix('+') {
            // Only mainland numbers: an international prefix must be China's.
            if !rest.starts_with("86") {
                return Err(PhoneError::Format);
            }
            digits = rest.to_string();
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PhoneError::Format);
        }
        for prefix in ["0086", "86"] {
            if digits.len() == 11 + prefix.len() && digits.starts_with(prefix) {
                digits = digits[prefix.len()..].to_string();
            }
        }
        let main = if is_mobile(&digits) {
            digits
        } else if let Some((area, local)) = split_landline(&main_with_dashes(main), &digits) {
            format!("{area}-{local}")
        } else {
            return Err(PhoneError::Format);
        };
        match ext {
            None => Ok(Phone(main)),
            Some(e) if (1..=6).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Phone(format!("{main}-{e}")))
            }
            Some(_) => Err(PhoneError::Format),
        }
    }

    /// The normalised number, for WeChat and for the keyed hash. Never log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for a mainland mobile number without extension (what `userquery` can find).
    pub fn is_mobile(&self) -> bool {
        is_mobile(&self.0)
    }

    /// `138****8000`, `010-****5678`, `138****8000-****`.
    pub fn masked(&self) -> String {
        mask_phone_str(&self.0)
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.masked())
    }
}

fn is_mobile(d: &str) -> bool {
    d.len() == 11
        && d.as_bytes()[0] == b'1'
        && (b'3'..=b'9').contains(&d.as_bytes()[1])
        && d.bytes().all(|b| b.is_ascii_digit())
}

fn split_extension(s: &str) -> (&str, Option<String>) {
    for sep in ["转", ",", "#", "ext.", "ext", "x"] {
        if let Some((a, b)) = s.split_once(sep) {
            return (a.trim(), Some(b.trim().to_string()));
        }
    }
    // `13800138000-1234` or `010-12345678-801`: an extension is a dash group after a full number.
    let groups: Vec<&str> = s.split('-').map(str::trim).collect();
    if groups.len() >= 2 {
        let last = groups[groups.len() - 1];
        let head: String = groups[..groups.len() - 1].concat();
        let head_digits: String = head.chars().filter(|c| c.is_ascii_digit()).collect();
        let full_mobile =
            is_mobile(head_digits.trim_start_matches("86")) || is_mobile(&head_digits);
        let full_landline =
            groups.len() >= 3 && head_digits.starts_with('0') && head_digits.len() >= 10;
        if (full_mobile || full_landline) && last.len() <= 6 {
            let cut = s.len() - s.rsplit('-').next().map_or(0, str::len) - 1;
            return (&s[..cut], Some(last.to_string()));
        }
    }
    (s, None)
}

fn main_with_dashes(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_digit() || *c == '-')
        .collect()
}

/// Area codes are 010, 02x (3 digits) or 0xxx (4 digits); local numbers 7 or 8 digits.
fn split_landline(with_dashes: &str, digits: &str) -> Option<(String, String)> {
    if !digits.starts_with('0') {
        return None;
    }
    let area_len = if let Some((a, _)) = with_dashes.split_once('-') {
        a.len()
    } else if digits.starts_with("01") || digits.starts_with("02") {
        3
    } else {
        4
    };
    if !(3..=4).contains(&area_len) || digits.len() <= area_len {
        return None;
    }
    let (area, local) = digits.split_at(area_len);
    // Area codes are 0 followed by a non-zero digit (00 is the international prefix).
    ((7..=8).contains(&local.len()) && !local.starts_with('0') && !area.starts_with("00"))
        .then(|| (area.to_string(), local.to_string()))
}

/// Mask a normalised phone string: keep the first 3 and last 4 digits of a mobile number,
/// the area code and last 4 digits of a landline, and hide extensions entirely.
pub fn mask_phone_str(s: &str) -> String {
    let mut parts = s.split('-');
    let first = parts.next().unwrap_or("");
    let rest: Vec<&str> = parts.collect();
    if first.len() == 11 && first.starts_with('1') {
        let mut out = format!("{}****{}", &first[..3], &first[7..]);
        for e in rest {
            out.push('-');
            out.push_str(&"*".repeat(e.len()));
        }
        out
    } else if first.starts_with('0') && !rest.is_empty() {
        let local = rest[0];
        let keep = local.len().saturating_sub(4);
        let mut out = format!("{first}-{}{}", "*".repeat(keep), &local[keep..]);
        for e in &rest[1..] {
            out.push('-');
            out.push_str(&"*".repeat(e.len()));
        }
        out
    } else {
        mask_phones_in_text(s)
    }
}

/// Mask phone numbers in free text (courier numbers inside `action_msg`, log lines), however
/// people write them: a run of 7 or more digits, ASCII or full-width (`１３９…`), also when
/// written in short groups joined by one space or hyphen (`138 0013 8000`, `139-0013-9000`,
/// `+86 138 0013 8000`, `1380013 8000`). An 11-digit mobile keeps its first 3 and last 4
/// digits, a landline written with its area code apart its area code and last 4, anything
/// else only its last 4. Separators stay where they were. A date
/// (`2024-11-25`) is not a number anyone can call and stays as it is. Masking what is already
/// masked changes nothing.
pub fn mask_phones_in_text(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if digit_value(chars[i]).is_none() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let end = number_end(&chars, i);
        mask_number(&chars[i..end], &mut out);
        i = end;
    }
    out
}

/// ASCII and full-width digits.
fn digit_value(c: char) -> Option<u32> {
    match c {
        '0'..='9' => Some(c as u32 - '0' as u32),
        '\u{FF10}'..='\u{FF19}' => Some(c as u32 - 0xFF10),
        _ => None,
    }
}

/// What may join two groups of one written number.
fn is_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '-' | '\u{00A0}' | '\u{3000}' | '\u{FF0D}' | '\u{2010}' | '\u{2011}'
    )
}

/// The end of the written number starting at `start`: digit groups joined by single
/// separators, whatever their sizes (`1380013 8000` is one number: masking its groups apart
/// would show 8 of its 11 digits).
fn number_end(chars: &[char], start: usize) -> usize {
    let mut end = start;
    loop {
        while end < chars.len() && digit_value(chars[end]).is_some() {
            end += 1;
        }
        let joined = end + 1 < chars.len()
            && is_separator(chars[end])
            && digit_value(chars[end + 1]).is_some();
        if !joined {
            return end;
        }
        end += 1;
    }
}

fn mask_number(number: &[char], out: &mut String) {
    let digits: Vec<u32> = number.iter().filter_map(|c| digit_value(*c)).collect();
    let grouped = digits.len() != number.len();
    if digits.len() < 7 || (grouped && is_date(number)) {
        out.extend(number);
        return;
    }
    let n = digits.len();
    // A landline written with its area code apart (`0571-88886666`) keeps the area code.
    let area = number
        .iter()
        .take_while(|c| digit_value(**c).is_some())
        .count();
    let landline = grouped
        && (3..=4).contains(&area)
        && digits[0] == 0
        && digits[1] != 0
        && (7..=8).contains(&(n - area));
    let (keep_head, keep_tail) = if n == 11 && digits[0] == 1 {
        (3, 4)
    } else if landline {
        (area, 4)
    } else {
        (0, 4)
    };
    let mut k = 0;
    for c in number {
        if digit_value(*c).is_some() {
            out.push(if k < keep_head || k >= n - keep_tail {
                *c
            } else {
                '*'
            });
            k += 1;
        } else {
            out.push(*c);
        }
    }
}

/// `2024-11-25` (and `2024 11 25 09`): a four-digit year from 1900-2099, then groups of at
/// most two digits.
fn is_date(number: &[char]) -> bool {
    let s: String = number
        .iter()
        .map(|c| match digit_value(*c) {
            Some(d) => char::from_digit(d, 10).unwrap_or('0'),
            None => ' ',
        })
        .collect();
    let mut groups = s.split(' ');
    let year = groups.next().unwrap_or("");
    year.len() == 4
        && (year.starts_with("19") || year.starts_with("20"))
        && groups.all(|g| (1..=2).contains(&g.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        Phone::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .as_str()
            .to_string()
    }

    #[test]
    fn mainland_mobiles_are_normalised_to_eleven_digits() {
        assert_eq!(ok("13800138000"), "13800138000");
        assert_eq!(ok("+86 138 0013 8000"), "13800138000");
        assert_eq!(ok("86-138-0013-8000"), "13800138000");
        assert_eq!(ok("008613800138000"), "13800138000");
        assert!(Phone::parse("13800138000").unwrap().is_mobile());
    }

    #[test]
    fn virtual_numbers_keep_their_extension() {
        assert_eq!(ok("13800138000-1234"), "13800138000-1234");
        assert_eq!(ok("13800138000转1234"), "13800138000-1234");
        assert_eq!(ok("17012345678,5678"), "17012345678-5678");
        assert!(!Phone::parse("13800138000-1234").unwrap().is_mobile());
    }

    #[test]
    fn landlines_need_an_area_code() {
        assert_eq!(ok("010-12345678"), "010-12345678");
        assert_eq!(ok("0755-1234567"), "0755-1234567");
        assert_eq!(ok("075512345678"), "0755-12345678");
        assert_eq!(ok("0755-1234567-801"), "0755-1234567-801");
        assert_eq!(ok("021-87654321转66"), "021-87654321-66");
    }

    #[test]
    fn implausible_numbers_are_rejected() {
        for bad in [
            "",
            "12345",
            "23800138000",
            "1380013800",
            "138001380001",
            "12800138000",
            "abc",
            "13800138000-1234567",
            "0000-1234567",
            "13800138000转",
            "+1 415 555 0100",
        ] {
            assert!(Phone::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn masking_hides_the_middle_and_extensions() {
        assert_eq!(Phone::parse("13800138000").unwrap().masked(), "138****8000");
        assert_eq!(
            Phone::parse("13800138000-1234").unwrap().masked(),
            "138****8000-****"
        );
        assert_eq!(
            Phone::parse("010-12345678").unwrap().masked(),
            "010-****5678"
        );
        assert_eq!(
            format!("{:?}", Phone::parse("13800138000").unwrap()),
            "Phone(138****8000)"
        );
    }

    #[test]
    fn phones_inside_text_are_masked() {
        assert_eq!(
            mask_phones_in_text("派件员张三 13800000000 正在派送"),
            "派件员张三 138****0000 正在派送"
        );
        assert_eq!(
            mask_phones_in_text("网点电话 075512345678"),
            "网点电话 ********5678"
        );
        assert_eq!(mask_phones_in_text("第3车 12号"), "第3车 12号");
    }

    #[test]
    fn phones_written_in_groups_or_full_width_are_masked() {
        assert_eq!(
            mask_phones_in_text("派件员 138 0013 8000 联系"),
            "派件员 138 **** 8000 联系"
        );
        assert_eq!(
            mask_phones_in_text("电话139-0013-9000。"),
            "电话139-****-9000。"
        );
        assert_eq!(
            mask_phones_in_text("致电１３９００１３９００１"),
            "致电１３９****９００１"
        );
        assert_eq!(
            mask_phones_in_text("+86 138 0013 8000"),
            "+** *** **** 8000"
        );
        assert_eq!(
            mask_phones_in_text("网点 0755-12345678"),
            "网点 0755-****5678"
        );
        assert_eq!(mask_phones_in_text("座机 8765 4321"), "座机 **** 4321");
        // Found by fuzzing: groups of any size belong to one number.
        assert_eq!(mask_phones_in_text("1380013 8000"), "138**** 8000");
        assert_eq!(mask_phones_in_text("138 00138000"), "138 ****8000");
        assert_eq!(
            mask_phones_in_text("１３８　００１３　８０００"),
            "１３８　****　８０００"
        );
    }

    proptest::proptest! {
        #[test]
        fn masking_twice_is_masking_once(s in "[0-9０-９ \\-a*]{0,40}") {
            let once = mask_phones_in_text(&s);
            proptest::prop_assert_eq!(mask_phones_in_text(&once), once);
        }

        #[test]
        fn no_mobile_survives_any_grouping(
            digits in "1[3-9][0-9]{9}",
            cuts in proptest::collection::btree_set(1usize..11, 0..4),
            sep in "[ \\-]",
        ) {
            let mut written = String::new();
            for (i, d) in digits.chars().enumerate() {
                if cuts.contains(&i) {
                    written.push_str(&sep);
                }
                written.push(d);
            }
            let masked = mask_phones_in_text(&format!("电话{written}。"));
            let shown: String = masked.chars().filter(char::is_ascii_digit).collect();
            proptest::prop_assert_eq!(shown.len(), 7, "{}", masked);
            proptest::prop_assert!(masked.contains('*'));
        }
    }

    #[test]
    fn dates_times_and_short_numbers_stay_readable() {
        for s in [
            "2024-11-25 09:00:00 到达",
            "2024 11 25",
            "第3车 12号 5-6 件",
            "单号 SF1234 共 2 件",
            "1-2-3-4",
        ] {
            assert_eq!(mask_phones_in_text(s), s);
        }
    }
}
