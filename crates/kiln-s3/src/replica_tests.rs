//! Two replicas of one store, as two `kiln serve` processes would run it: each with its own pool on
//! the same database and the same directory, nothing shared in memory. On PostgreSQL this is the
//! replicated deployment; on SQLite, two processes on one machine.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures::StreamExt;

use crate::testing::{Place, on_each_database};
use crate::{Error, ListQuery, MIN_PART_SIZE, ObjectMeta, ObjectStore};

on_each_database!(
    buckets_created_or_deleted_on_one_replica_are_seen_by_the_other,
    objects_and_multipart_uploads_move_between_replicas,
    listings_on_either_replica_are_in_byte_order,
    racing_replicas_retire_every_blob_once_and_leak_none,
);

const ALICE: &str = "111111111111";
const BOB: &str = "222222222222";

async fn replicas(place: &Place) -> (ObjectStore, ObjectStore) {
    (place.store().await, place.store().await)
}

fn body(data: Bytes) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    futures::stream::iter([Ok(data)])
}

async fn read_all(store: &ObjectStore, bucket: &str, key: &str) -> Vec<u8> {
    let o = store.open_object(bucket, key).await.expect("open object");
    let chunks: Vec<std::io::Result<Bytes>> = o.read(0..o.info.size).collect().await;
    chunks.into_iter().flat_map(|c| c.expect("read").to_vec()).collect()
}

fn list_all(prefix: &str) -> ListQuery {
    ListQuery {
        prefix: prefix.into(),
        delimiter: None,
        marker: None,
        max_keys: 1000,
    }
}

async fn buckets_created_or_deleted_on_one_replica_are_seen_by_the_other(place: &Place) {
    let (a, b) = replicas(place).await;
    a.create_bucket(ALICE, "shared", Some("eu-west-1"))
        .await
        .expect("create");
    let seen = b
        .bucket("shared")
        .await
        .expect("lookup")
        .expect("visible on the other replica");
    assert_eq!(
        (seen.account.as_str(), seen.region.as_deref()),
        (ALICE, Some("eu-west-1"))
    );
    assert_eq!(b.buckets(ALICE).await.expect("buckets").len(), 1);
    assert!(matches!(
        b.create_bucket(ALICE, "shared", None).await,
        Err(Error::BucketAlreadyOwnedByYou(_))
    ));
    assert!(matches!(
        b.create_bucket(BOB, "shared", None).await,
        Err(Error::BucketAlreadyExists(_))
    ));

    b.delete_bucket("shared").await.expect("delete");
    assert!(a.bucket("shared").await.expect("lookup").is_none());
    assert!(matches!(
        a.put_bytes("shared", "k", Bytes::from_static(b"x"), ObjectMeta::default())
            .await,
        Err(Error::NoSuchBucket(_))
    ));
    assert!(matches!(
        a.list_objects("shared", list_all("")).await,
        Err(Error::NoSuchBucket(_))
    ));

    // Another account takes the name: the first replica must not still think it is Alice's.
    a.create_bucket(BOB, "shared", None).await.expect("create again");
    let owner = b.bucket("shared").await.expect("lookup").expect("exists");
    assert_eq!(owner.account, BOB);
    assert!(b.buckets(ALICE).await.expect("buckets").is_empty());
}

async fn objects_and_multipart_uploads_move_between_replicas(place: &Place) {
    let (a, b) = replicas(place).await;
    a.create_bucket(ALICE, "bkt", None).await.expect("create");
    let meta = ObjectMeta {
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    a.put_bytes("bkt", "k", Bytes::from_static(b"from a"), meta)
        .await
        .expect("put");
    assert_eq!(read_all(&b, "bkt", "k").await, b"from a");
    assert_eq!(
        b.head_object("bkt", "k")
            .await
            .expect("head")
            .meta
            .content_type
            .as_deref(),
        Some("text/plain")
    );
    b.put_bytes("bkt", "k", Bytes::from_static(b"from b"), ObjectMeta::default())
        .await
        .expect("replace");
    assert_eq!(read_all(&a, "bkt", "k").await, b"from b");

    let id = a
        .create_upload("bkt", "big", ObjectMeta::default())
        .await
        .expect("initiate");
    let first = vec![1u8; MIN_PART_SIZE as usize];
    let p1 = a
        .upload_part("bkt", "big", &id, 1, body(Bytes::from(first)), |_| Ok(()))
        .await
        .expect("part 1 on a");
    let p2 = b
        .upload_part("bkt", "big", &id, 2, body(Bytes::from_static(b"tail")), |_| Ok(()))
        .await
        .expect("part 2 on b");
    let (_, parts, _) = b.list_parts("bkt", "big", &id, 0, 10).await.expect("list parts");
    assert_eq!(parts.iter().map(|p| p.part_number).collect::<Vec<_>>(), [1, 2]);
    let (uploads, _) = a.list_uploads("bkt", "", "", "", 10).await.expect("list uploads");
    assert_eq!(uploads.len(), 1);
    let info = b
        .complete_upload("bkt", "big", &id, &[(1, p1.etag), (2, p2.etag)])
        .await
        .expect("complete on b");
    assert_eq!(info.size, MIN_PART_SIZE + 4);
    let all = read_all(&a, "bkt", "big").await;
    assert_eq!(
        (all.len() as u64, &all[all.len() - 5..]),
        (MIN_PART_SIZE + 4, &b"\x01tail"[..])
    );
    assert!(matches!(
        a.abort_upload("bkt", "big", &id).await,
        Err(Error::NoSuchUpload(_))
    ));

    a.copy_object("bkt", "big", "bkt", "copy", None)
        .await
        .expect("copy on a");
    b.delete_object("bkt", "big").await.expect("delete on b");
    assert!(matches!(
        a.head_object("bkt", "big").await,
        Err(Error::NoSuchKey { .. })
    ));
    assert_eq!(read_all(&b, "bkt", "copy").await.len() as u64, MIN_PART_SIZE + 4);
}

async fn listings_on_either_replica_are_in_byte_order(place: &Place) {
    let (a, b) = replicas(place).await;
    a.create_bucket(ALICE, "bkt", None).await.expect("create");
    // UTF-8 byte order: not the order of a collation, nor of UTF-16 code units.
    let mut keys = vec![
        "z",
        "é",
        "e\u{301}",
        "Ä",
        "a",
        "A",
        "\u{FF61}",
        "\u{10000}",
        "日本",
        "a/b",
        "a-b",
        "a.b",
        "ab",
    ];
    for (i, k) in keys.iter().enumerate() {
        let writer = if i % 2 == 0 { &a } else { &b };
        writer
            .put_bytes("bkt", k, Bytes::from(k.to_string()), ObjectMeta::default())
            .await
            .expect("put");
    }
    keys.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    for store in [&a, &b] {
        let page = store.list_objects("bkt", list_all("")).await.expect("list");
        assert_eq!(page.objects.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), keys);
        let page = store.list_objects("bkt", list_all("a")).await.expect("list");
        assert_eq!(
            page.objects.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            ["a", "a-b", "a.b", "a/b", "ab"]
        );
    }
}

/// Every blob file on disk.
fn blob_files(place: &Place) -> HashSet<String> {
    let mut all = HashSet::new();
    for dir in std::fs::read_dir(place.dir.path().join("blobs"))
        .expect("blobs")
        .flatten()
    {
        for f in std::fs::read_dir(dir.path()).expect("blob dir").flatten() {
            all.insert(f.file_name().to_string_lossy().into_owned());
        }
    }
    all
}

/// Replicas race completions of one upload (replacing an object and leaving a part out) and
/// puts and deletes of one key. Afterwards each blob file is live or retired by exactly one
/// replica; none is both, none is neither.
async fn racing_replicas_retire_every_blob_once_and_leak_none(place: &Place) {
    let (a, b) = replicas(place).await;
    a.create_bucket(ALICE, "bkt", None).await.expect("create");
    let big = Bytes::from(vec![7u8; MIN_PART_SIZE as usize]);
    for round in 0..5 {
        a.put_bytes(
            "bkt",
            "done",
            Bytes::from(format!("old {round}")),
            ObjectMeta::default(),
        )
        .await
        .expect("put the object to replace");
        let id = a
            .create_upload("bkt", "done", ObjectMeta::default())
            .await
            .expect("initiate");
        let mut etags = Vec::new();
        for (n, data) in [
            (1, big.clone()),
            (2, Bytes::from_static(b"end")),
            (3, Bytes::from_static(b"unused")),
        ] {
            let store = if n % 2 == 0 { &a } else { &b };
            let p = store
                .upload_part("bkt", "done", &id, n, body(data), |_| Ok(()))
                .await
                .expect("part");
            etags.push((n, p.etag));
        }
        etags.truncate(2);
        let (ra, rb) = tokio::join!(
            a.complete_upload("bkt", "done", &id, &etags),
            b.complete_upload("bkt", "done", &id, &etags)
        );
        assert!(
            ra.is_ok() != rb.is_ok(),
            "round {round}: exactly one completion succeeds: {ra:?} / {rb:?}"
        );
        for r in [ra, rb] {
            if let Err(e) = r {
                assert!(matches!(e, Error::NoSuchUpload(_)), "round {round}: {e}");
            }
        }
        assert_eq!(read_all(&b, "bkt", "done").await.len() as u64, MIN_PART_SIZE + 3);
    }

    let racers = [a.clone(), b.clone(), a.clone(), b.clone()].map(|store| {
        tokio::spawn(async move {
            for i in 0..25 {
                if i % 5 == 4 {
                    store.delete_object("bkt", "hot").await.expect("delete");
                } else {
                    store
                        .put_bytes("bkt", "hot", Bytes::from(format!("v{i}")), ObjectMeta::default())
                        .await
                        .expect("put");
                }
            }
        })
    });
    for r in racers {
        r.await.expect("racer");
    }

    let live = a.referenced_blobs().await;
    let mut retired: HashMap<String, usize> = HashMap::new();
    for id in a.retired_log().into_iter().chain(b.retired_log()) {
        *retired.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = retired.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "retired more than once: {twice:?}");
    let live_and_retired: Vec<_> = live.iter().filter(|id| retired.contains_key(*id)).collect();
    assert!(live_and_retired.is_empty(), "retired while live: {live_and_retired:?}");
    let on_disk = blob_files(place);
    let missing: Vec<_> = live.difference(&on_disk).collect();
    assert!(missing.is_empty(), "live blobs deleted: {missing:?}");
    let leaked: Vec<_> = on_disk
        .iter()
        .filter(|id| !live.contains(*id) && !retired.contains_key(*id))
        .collect();
    assert!(leaked.is_empty(), "blob files neither live nor retired: {leaked:?}");
    // Each round wrote an object and three parts; the racers wrote 4 x 20 objects.
    assert_eq!(
        retired.len() + live.len(),
        5 * 4 + 4 * 20,
        "blobs written and accounted for"
    );
}
