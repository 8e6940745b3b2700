//! Sender and receiver contacts (the `Contact` object of `pathnotify`).

use serde::{Deserialize, Serialize};

use super::phone::Phone;
use super::validation::{text, Errors};

// The schema derived here is the sender's; `receiver_schema` requires `name` and `phone` too.
/// A contact as the backoffice sends it.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    #[schema(max_length = 64)]
    pub name: Option<String>,
    /// mainland mobile (11 digits, +86 allowed), landline with area code, either with an extension
    #[schema(max_length = 32)]
    pub phone: Option<String>,
    #[schema(required = true, nullable = false, min_length = 1, max_length = 32)]
    pub province: Option<String>,
    #[schema(required = true, nullable = false, min_length = 1, max_length = 32)]
    pub city: Option<String>,
    #[schema(required = true, nullable = false, min_length = 1, max_length = 32)]
    pub area: Option<String>,
    #[schema(max_length = 64)]
    pub street: Option<String>,
    #[schema(max_length = 256)]
    pub address: Option<String>,
}

/// The receiver's contact: [`ContactInput`] with `name` and `phone` required too (WeChat
/// finds the user by the phone).
pub fn receiver_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{Schema, Type};
    use utoipa::openapi::{ObjectBuilder, RefOr};
    use utoipa::PartialSchema;
    let RefOr::T(Schema::Object(mut o)) = ContactInput::schema() else {
        unreachable!("a derived struct schema is an inline object")
    };
    for (name, max) in [("name", 64), ("phone", 32)] {
        let description = match o.properties.get(name) {
            Some(RefOr::T(Schema::Object(p))) => p.description.clone(),
            _ => None,
        };
        o.properties.insert(
            name.to_string(),
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(max))
                .description(description)
                .into(),
        );
    }
    o.required = ["name", "phone", "province", "city", "area"]
        .map(String::from)
        .to_vec();
    o.title = Some("ReceiverInput".into());
    o.description = Some(
        "The receiver: as a contact, and `name` and `phone` are required (WeChat finds the \
         user by the phone)."
            .into(),
    );
    o
}

/// A validated contact. Its phone is personal data: it is only ever stored encrypted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub name: Option<String>,
    pub phone: Option<String>,
    pub province: String,
    pub city: String,
    pub area: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl std::fmt::Debug for Contact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contact")
            .field(
                "phone",
                &self.phone.as_deref().map(super::phone::mask_phone_str),
            )
            .field("city", &self.city)
            .finish_non_exhaustive()
    }
}

impl Contact {
    /// Validate a contact. The receiver needs a name and a phone (WeChat finds the user by
    /// it); for the sender both are optional (spec §3.2, safe reading).
    pub fn parse(
        errors: &mut Errors,
        prefix: &str,
        input: Option<&ContactInput>,
        is_receiver: bool,
    ) -> Option<Contact> {
        let Some(c) = input else {
            errors.add(prefix, "is required");
            return None;
        };
        let f = |k: &str| format!("{prefix}.{k}");
        let name = text(errors, &f("name"), c.name.as_deref(), 64, is_receiver);
        let phone = match c.phone.as_deref() {
            None | Some("") if is_receiver => {
                errors.add(f("phone"), "is required");
                None
            }
            None | Some("") => None,
            Some(p) => match Phone::parse(p) {
                Ok(p) => Some(p.as_str().to_string()),
                Err(e) => {
                    errors.add(f("phone"), e.to_string());
                    None
                }
            },
        };
        let province = text(errors, &f("province"), c.province.as_deref(), 32, true);
        let city = text(errors, &f("city"), c.city.as_deref(), 32, true);
        let area = text(errors, &f("area"), c.area.as_deref(), 32, true);
        let street = text(errors, &f("street"), c.street.as_deref(), 64, false);
        let address = text(errors, &f("address"), c.address.as_deref(), 256, false);
        Some(Contact {
            name,
            phone,
            province: province?,
            city: city?,
            area: area?,
            street,
            address,
        })
    }

    /// The phone as a [`Phone`] (validated at ingest, so parsing again cannot fail on stored data).
    pub fn phone(&self) -> Option<Phone> {
        self.phone.as_deref().and_then(|p| Phone::parse(p).ok())
    }

    pub fn masked_phone(&self) -> Option<String> {
        self.phone.as_deref().map(super::phone::mask_phone_str)
    }
}
