//! Property test standing in for a fuzz target of the tar unpacker (issue 24): archives of random
//! files, directories, symbolic and hard links, with names and targets built from `..`, `.`, `/`
//! and a few plain names. Whatever the archive, unpacking never panics and never writes outside
//! the target directory, and what it accepts holds no link that leads out of it.

use std::fs::File;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Kind {
    File,
    Dir,
    Symlink(String),
    HardLink(String),
}

fn path_text() -> impl Strategy<Value = String> {
    let part = prop_oneof![Just(".."), Just("."), Just("a"), Just("b"), Just("up"), Just("")];
    (any::<bool>(), prop::collection::vec(part, 1..5)).prop_map(|(abs, parts)| {
        let joined = parts.join("/");
        if abs { format!("/{joined}") } else { joined }
    })
}

fn entries() -> impl Strategy<Value = Vec<(String, Kind)>> {
    let kind = prop_oneof![
        Just(Kind::File),
        Just(Kind::Dir),
        path_text().prop_map(Kind::Symlink),
        path_text().prop_map(Kind::HardLink),
    ];
    prop::collection::vec((path_text(), kind), 1..8)
}

/// Writes the entries with raw headers (tar::Builder refuses the names this needs).
fn archive(out: &Path, entries: &[(String, Kind)]) {
    let mut b = tar::Builder::new(GzEncoder::new(File::create(out).unwrap(), Compression::fast()));
    for (name, kind) in entries {
        let mut h = tar::Header::new_old();
        let n = name.as_bytes();
        if n.is_empty() || n.len() > 99 {
            continue;
        }
        h.as_old_mut().name[..n.len()].copy_from_slice(n);
        h.set_mode(0o755);
        let data: &[u8] = match kind {
            Kind::File => {
                h.set_entry_type(tar::EntryType::Regular);
                b"data"
            }
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                b""
            }
            Kind::Symlink(t) | Kind::HardLink(t) => {
                h.set_entry_type(if matches!(kind, Kind::Symlink(_)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                let t = t.as_bytes();
                let len = t.len().min(99);
                h.as_old_mut().linkname[..len].copy_from_slice(&t[..len]);
                b""
            }
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn unpacking_never_writes_outside_the_target(entries in entries()) {
        let root = tempfile::tempdir().unwrap();
        let work = root.path().join("work");
        let target = work.join("code");
        std::fs::create_dir_all(work.join("outside")).unwrap();
        let file = root.path().join("a.tar.gz");
        archive(&file, &entries);
        let result = kiln_blob::unpack_tar_gz(&file, &target);
        // Nothing beside the target, nothing above it.
        prop_assert_eq!(files_in(&work.join("outside")), Vec::<String>::new());
        let beside = files_in(&work);
        prop_assert!(beside.iter().all(|n| n == "outside" || n == "code"), "{:?}", beside);
        prop_assert_eq!(files_in(root.path()), vec!["a.tar.gz".to_string(), "work".to_string()]);
        if result.is_ok() {
            // Every link that resolves resolves inside the target.
            let canonical = std::fs::canonicalize(&target).unwrap();
            let mut stack = vec![target.clone()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap().flatten() {
                    let meta = std::fs::symlink_metadata(e.path()).unwrap();
                    if meta.file_type().is_symlink() {
                        if let Ok(real) = std::fs::canonicalize(e.path()) {
                            prop_assert!(real.starts_with(&canonical), "{} -> {}", e.path().display(), real.display());
                        }
                    } else if meta.is_dir() {
                        stack.push(e.path());
                    }
                }
            }
        }
    }
}
