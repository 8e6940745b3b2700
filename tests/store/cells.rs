//! Landing-page cells set through the backoffice API: replaced as a whole, ordered, and
//! telling "never set" from "set to nothing".

use wxexpress::store::{CellRecord, Store};

use crate::migrated;

fn cell(key: &str, condition: Option<&str>) -> CellRecord {
    CellRecord {
        cell_key: key.to_owned(),
        name: format!("名称-{key}"),
        link: format!("https://c.example/{key}/{{waybill_id}}"),
        condition_json: condition.map(str::to_owned),
    }
}

pub async fn cells_are_unset_until_replaced_then_come_back_in_order(store: Store) {
    let store = migrated(store).await;
    assert_eq!(store.get_cells().await.unwrap(), None, "never set");

    let first = vec![
        cell("pay", Some(r#"{"latest_action_in":[90010]}"#)),
        cell("complain", None),
        cell("address", Some(r#"{"before_delivery":true}"#)),
    ];
    store.replace_cells(&first, 1_000).await.unwrap();
    let set = store.get_cells().await.unwrap().expect("set");
    assert_eq!(set.cells, first);
    assert_eq!(set.updated_at, 1_000);

    // A replacement is whole: fewer cells, another order, a key reused.
    let second = vec![cell("complain", None), cell("pay", None)];
    store.replace_cells(&second, 2_000).await.unwrap();
    let set = store.get_cells().await.unwrap().expect("set");
    assert_eq!(set.cells, second);
    assert_eq!(set.updated_at, 2_000);
}

pub async fn an_empty_list_is_a_setting_of_its_own_and_clearing_forgets_it(store: Store) {
    let store = migrated(store).await;
    store
        .replace_cells(&[cell("pay", None)], 1_000)
        .await
        .unwrap();
    store.replace_cells(&[], 2_000).await.unwrap();
    let set = store
        .get_cells()
        .await
        .unwrap()
        .expect("an empty list is still set");
    assert!(set.cells.is_empty());
    assert_eq!(set.updated_at, 2_000);

    assert!(store.clear_cells().await.unwrap());
    assert_eq!(store.get_cells().await.unwrap(), None);
    assert!(!store.clear_cells().await.unwrap(), "nothing left to clear");
}

pub async fn a_replacement_with_a_repeated_key_fails_and_keeps_the_old_list(store: Store) {
    let store = migrated(store).await;
    let old = vec![cell("pay", None)];
    store.replace_cells(&old, 1_000).await.unwrap();
    let bad = vec![cell("complain", None), cell("complain", None)];
    assert!(store.replace_cells(&bad, 2_000).await.is_err());
    let set = store.get_cells().await.unwrap().expect("set");
    assert_eq!(
        (set.cells, set.updated_at),
        (old, 1_000),
        "nothing half-stored"
    );
}
