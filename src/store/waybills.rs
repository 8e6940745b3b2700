//! The `waybills` table: one row per waybill, replaced by each `PUT`.

use sqlx::AnyConnection;

use super::{Store, StoreError, WaybillRecord};

pub(super) const COLUMNS: &str = "waybill_id, create_time, contacts, receiver_phone_hash, \
                       sender_phone_hash, sender_openid, receiver_openid, \
                       payment_out_trade_no, payment_total_fee, created_at, updated_at";

impl Store {
    /// Creates or replaces a waybill; `true` when it was created. An update replaces every
    /// field but `created_at`, which keeps the stored value.
    pub async fn upsert_waybill(&self, w: &WaybillRecord) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let created = upsert_in(&mut tx, w).await?;
        tx.commit().await?;
        Ok(created)
    }

    pub async fn get_waybill(&self, waybill_id: &str) -> Result<Option<WaybillRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM waybills WHERE waybill_id = $1");
        let row = sqlx::query_as::<_, WaybillRecord>(&sql)
            .bind(waybill_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    pub async fn count_waybills(&self) -> Result<i64, StoreError> {
        let count = sqlx::query_scalar("SELECT COUNT(*) FROM waybills")
            .fetch_one(&self.pool)
            .await?;
        Ok(count)
    }
}

/// Insert-or-update inside the caller's transaction; `true` when created.
///
/// Two statements rather than `ON CONFLICT DO UPDATE`, because neither database portably
/// tells which of the two happened. Race-free: if the insert conflicts, the row exists.
pub(super) async fn upsert_in(
    conn: &mut AnyConnection,
    w: &WaybillRecord,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "INSERT INTO waybills ({COLUMNS}) VALUES ({}) \
         ON CONFLICT (waybill_id) DO NOTHING RETURNING waybill_id",
        super::placeholders(1, 11)
    );
    let inserted = bind_row(sqlx::query(&sql), w)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    if inserted {
        return Ok(true);
    }
    sqlx::query(
        "UPDATE waybills SET create_time = $2, contacts = $3, receiver_phone_hash = $4, \
                sender_phone_hash = $5, sender_openid = $6, receiver_openid = $7, \
                payment_out_trade_no = $8, payment_total_fee = $9, updated_at = $10 \
         WHERE waybill_id = $1",
    )
    .bind(&w.waybill_id)
    .bind(w.create_time)
    .bind(&w.contacts)
    .bind(&w.receiver_phone_hash)
    .bind(&w.sender_phone_hash)
    .bind(&w.sender_openid)
    .bind(&w.receiver_openid)
    .bind(&w.payment_out_trade_no)
    .bind(w.payment_total_fee)
    .bind(w.updated_at)
    .execute(&mut *conn)
    .await?;
    Ok(false)
}

/// Whether the waybill exists, inside the caller's transaction.
pub(super) async fn exists_in(
    conn: &mut AnyConnection,
    waybill_id: &str,
) -> Result<bool, sqlx::Error> {
    let found = sqlx::query("SELECT 1 FROM waybills WHERE waybill_id = $1")
        .bind(waybill_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

/// Binds a waybill's values in [`COLUMNS`] order (11 of them).
fn bind_row<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    w: &'q WaybillRecord,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(&w.waybill_id)
        .bind(w.create_time)
        .bind(&w.contacts)
        .bind(&w.receiver_phone_hash)
        .bind(&w.sender_phone_hash)
        .bind(&w.sender_openid)
        .bind(&w.receiver_openid)
        .bind(&w.payment_out_trade_no)
        .bind(w.payment_total_fee)
        .bind(w.created_at)
        .bind(w.updated_at)
}

/// Inserts or replaces the waybills (distinct ids) in one statement, inside the caller's
/// transaction, keeping a stored one's `created_at` (as [`upsert_in`] does).
pub(super) async fn upsert_many_in(
    conn: &mut AnyConnection,
    records: &[&WaybillRecord],
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO waybills ({COLUMNS}) VALUES {} ON CONFLICT (waybill_id) DO UPDATE SET \
             create_time = excluded.create_time, contacts = excluded.contacts, \
             receiver_phone_hash = excluded.receiver_phone_hash, \
             sender_phone_hash = excluded.sender_phone_hash, \
             sender_openid = excluded.sender_openid, receiver_openid = excluded.receiver_openid, \
             payment_out_trade_no = excluded.payment_out_trade_no, \
             payment_total_fee = excluded.payment_total_fee, updated_at = excluded.updated_at",
        super::values(records.len(), 11)
    );
    let mut q = sqlx::query(&sql);
    for w in records {
        q = bind_row(q, w);
    }
    q.execute(&mut *conn).await?;
    Ok(())
}
