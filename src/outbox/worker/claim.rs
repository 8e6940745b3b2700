//! A claim: the waybills due, leased to this worker, with everything their pushes need
//! loaded in a few reads.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::clock::now_ms;
use crate::codec;
use crate::domain::Phone;
use crate::store::{PushLoad, StoreError, WaybillRecord};

use super::{Claimed, PushWorker};

impl PushWorker {
    /// Claims up to `limit` due waybills for `owner` and loads what their steps read.
    pub(super) async fn claim(&self, owner: &str, limit: i64) -> Result<Vec<Claimed>, StoreError> {
        let ids = self
            .store
            .claim_waybills(
                owner,
                now_ms(),
                self.settings.lease.as_millis() as i64,
                limit,
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        match self.load(ids.clone()).await {
            Ok(claimed) => Ok(claimed),
            Err(e) => {
                // Hand them back now rather than leave their leases to lapse.
                for id in &ids {
                    let _ = self.store.release_waybill(id, owner).await;
                }
                Err(e)
            }
        }
    }

    /// What the steps of these claimed waybills read: their work, records and node texts,
    /// the receivers' cached bindings and the API pauses, in a few reads for all of them.
    pub(super) async fn load(&self, ids: Vec<String>) -> Result<Vec<Claimed>, StoreError> {
        let now = now_ms();
        let mut loads: HashMap<String, PushLoad> = self
            .store
            .load_push_batch(&ids)
            .await?
            .into_iter()
            .map(|l| (l.work.waybill_id.clone(), l))
            .collect();
        let pauses: HashMap<String, i64> = self
            .store
            .list_pauses(now)
            .await?
            .into_iter()
            .map(|(api, until, _)| (api, until))
            .collect();
        let pauses = Arc::new(pauses);
        let hashes: HashMap<String, String> = loads
            .iter()
            .filter_map(|(id, l)| Some((id.clone(), self.receiver_hash(l.waybill.as_ref()?)?)))
            .collect();
        let wanted: Vec<String> = hashes
            .values()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let bindings = if wanted.is_empty() {
            HashMap::new()
        } else {
            self.store.get_bindings(&wanted, now).await?
        };
        Ok(ids
            .into_iter()
            .map(|waybill_id| Claimed {
                bound: hashes
                    .get(&waybill_id)
                    .and_then(|h| bindings.get(h).copied()),
                load: loads.remove(&waybill_id),
                pauses: pauses.clone(),
                waybill_id,
            })
            .collect())
    }

    /// The keyed hash of the receiver's phone, if it is a mobile number that can be read.
    pub(super) fn receiver_hash(&self, record: &WaybillRecord) -> Option<String> {
        let contacts = codec::open_contacts(&self.privacy, record).ok()?;
        let phone = contacts.receiver.phone().filter(Phone::is_mobile)?;
        Some(self.privacy.phone_hash(phone.as_str()))
    }
}
