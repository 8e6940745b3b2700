//! Domain types: waybills, tracking events, action types, contacts and phones. No I/O.

pub mod action;
pub mod cell;
pub mod contact;
pub mod event;
pub mod phone;
pub mod strict;
pub mod validation;
pub mod waybill;

pub use action::ActionType;
pub use cell::{Cell, CellCondition, CellInput};
pub use contact::{Contact, ContactInput};
pub use event::{EventInput, NodeText, TrackingEvent};
pub use phone::{mask_phone_str, mask_phones_in_text, Phone};
pub use validation::FieldError;
pub use waybill::{Contacts, Waybill, WaybillId, WaybillInput};
