//! How the API's JSON input is read, where serde's defaults are looser than the document
//! (`/openapi.json`) says:
//!
//! - A derived struct also reads a JSON *array*, its items taken as the fields in order:
//!   `"sender": ["张三", "13800138001", …]` would be a contact. The API's objects are objects
//!   only ([`Strict`], [`object`], [`objects`]).
//! - JSON Schema counts `1700000000.0` as an integer, serde's `i64` does not: an integral
//!   number written with a fraction is read as the integer ([`integer`]); `1.5` is refused.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Error, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// `T`, read from a JSON object only.
pub struct Strict<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Strict<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OnlyMap<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OnlyMap<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(OnlyMap(PhantomData)).map(Strict)
    }
}

/// An optional object field (`#[serde(default, deserialize_with = "strict::object")]`).
pub fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Ok(Option::<Strict<T>>::deserialize(d)?.map(|s| s.0))
}

/// An optional list of objects.
pub fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    Ok(Option::<Vec<Strict<T>>>::deserialize(d)?.map(|v| v.into_iter().map(|s| s.0).collect()))
}

/// A list of objects.
pub fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Vec::<Strict<T>>::deserialize(d)?
        .into_iter()
        .map(|s| s.0)
        .collect())
}

/// An optional integer; an integral number written with a fraction (`5.0`) is that integer.
pub fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct Integer;
    impl Visitor<'_> for Integer {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer")
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("{v} is out of range")))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
            // 2^63 is exact in f64; every integral value below it in magnitude fits an i64.
            const LIMIT: f64 = 9_223_372_036_854_775_808.0;
            if v.fract() == 0.0 && v > -LIMIT && v < LIMIT {
                Ok(Some(v as i64))
            } else {
                Err(E::custom(format!("{v} is not an integer")))
            }
        }
    }
    d.deserialize_any(Integer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default, deserialize_with = "object")]
        one: Option<Inner>,
        #[serde(default, deserialize_with = "objects")]
        many: Option<Vec<Inner>>,
        #[serde(default, deserialize_with = "integer")]
        n: Option<i64>,
    }

    fn read(s: &str) -> Result<Outer, String> {
        serde_json::from_str::<Strict<Outer>>(s)
            .map(|s| s.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn objects_are_objects_only() {
        let ok = read(r#"{"one": {"a": "x"}, "many": [{"a": "y"}], "n": 3}"#).unwrap();
        assert_eq!(
            ok.one,
            Some(Inner {
                a: Some("x".into())
            })
        );
        assert_eq!(ok.many.unwrap().len(), 1);
        assert_eq!(read("{}").unwrap().one, None);
        assert_eq!(
            read(r#"{"one": null, "many": null, "n": null}"#).unwrap().n,
            None
        );
        for bad in [
            r#"[null, null, null]"#,
            r#"{"one": ["x"]}"#,
            r#"{"many": [["y"]]}"#,
            r#"{"one": "x"}"#,
        ] {
            let e = read(bad).expect_err(bad);
            assert!(e.contains("a JSON object"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_integral_number_with_a_fraction_is_the_integer() {
        assert_eq!(
            read(r#"{"n": 1700000000.0}"#).unwrap().n,
            Some(1_700_000_000)
        );
        assert_eq!(read(r#"{"n": -2.0}"#).unwrap().n, Some(-2));
        assert_eq!(read(r#"{"n": 1e3}"#).unwrap().n, Some(1000));
        for bad in [
            r#"{"n": 1.5}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": "5"}"#,
            r#"{"n": 18446744073709551615}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}
