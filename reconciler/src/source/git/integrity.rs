//! Checks of the cache's pack files before gix reads them. gix trusts what is on disk: a pack
//! cut short or overwritten made it panic (offsets past the end of the data), and its index
//! alone tells whether an object is "there". So every pack is checked once (at the first fetch
//! after start, and when it first appears), and before each fetch the pack directory is compared
//! with what was checked: a file that changed or went away since is checked again.
//!
//! A pack (`pack-<id>.pack` with its `pack-<id>.idx`) passes when: the index has the version 1
//! or 2 layout its object count gives and its own checksum matches; the pack has the `PACK`
//! header with the same object count, the checksum the index records for it, and every offset
//! in the index falls inside it; and the SHA-1 of the whole pack matches its trailer. A
//! `multi-pack-index` must match its checksum. Anything else in the directory is left alone.
//!
//! Pure file reads: no gix, so a damaged file cannot make this panic.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bytes of a SHA-1 (the caches gix creates use SHA-1 object ids).
const HASH: usize = 20;
/// Index v2: magic, version, fan-out table.
const IDX_V2_MAGIC: [u8; 4] = [0xff, b't', b'O', b'c'];
const FANOUT: usize = 256 * 4;
/// Pack header: `PACK`, version, object count.
const PACK_HEADER: usize = 12;

/// What a file looked like when it was checked: any write, truncation or replacement changes
/// one of these (`ctime` even when `mtime` is set back).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    ino: u64,
    dev: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            len: meta.len(),
            ino: meta.ino(),
            dev: meta.dev(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }
}

/// The pack files as they were when last checked and found sound (empty: nothing checked yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Seal {
    files: BTreeMap<OsString, Stamp>,
}

impl Seal {
    /// Files (index, pack, multi-pack index) the seal covers.
    pub(super) fn len(&self) -> usize {
        self.files.len()
    }
}

/// The result of [`check`]: the new seal and how the directory differs from the previous one.
#[derive(Debug)]
pub(super) struct Checked {
    pub seal: Seal,
    /// Files checked because they were not in the previous seal (new packs).
    pub added: usize,
    /// Files of the previous seal that changed or went away since: not Baton's doing.
    pub altered: Vec<OsString>,
    /// Bytes read to check them (the cost of this check).
    pub bytes_read: u64,
}

/// A damaged file in the cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", file.display())]
pub(super) struct Damage {
    pub file: PathBuf,
    pub reason: String,
}

/// Check the packs of the bare repository at `git_dir` that `seal` does not vouch for (all of
/// them when it is empty).
pub(super) fn check(git_dir: &Path, seal: &Seal) -> Result<Checked, Damage> {
    let dir = git_dir.join("objects").join("pack");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        // No pack directory: an empty cache (or one removed wholesale, which the fetch notices).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Checked {
                seal: Seal::default(),
                added: 0,
                altered: seal.files.keys().cloned().collect(),
                bytes_read: 0,
            })
        }
        Err(e) => return Err(damage(&dir, format!("cannot list it: {e}"))),
    };
    let mut stamps = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| damage(&dir, format!("cannot list it: {e}")))?;
        let name = entry.file_name();
        if !covered(&name) {
            continue;
        }
        let meta = entry
            .metadata()
            .map_err(|e| damage(&entry.path(), e.to_string()))?;
        stamps.insert(name, Stamp::of(&meta));
    }
    let altered = (seal.files.iter())
        .filter(|(name, stamp)| stamps.get(*name) != Some(stamp))
        .map(|(name, _)| name.clone())
        .collect();
    let mut out = Checked {
        seal: Seal::default(),
        added: 0,
        altered,
        bytes_read: 0,
    };
    let unchanged = |name: &OsString| {
        let now = stamps.get(name);
        now.is_some() && seal.files.get(name) == now
    };
    for (name, stamp) in &stamps {
        let text = name.to_string_lossy();
        let path = dir.join(name);
        // A pack is checked with its index (an orphan pack is never read by gix).
        let pack = text
            .strip_suffix(".idx")
            .map(|stem| OsString::from(format!("{stem}.pack")));
        if let Some(pack) = pack {
            let pack_stamp = stamps
                .get(&pack)
                .ok_or_else(|| damage(&dir.join(&pack), "missing (its index is there)".into()))?;
            if !(unchanged(name) && unchanged(&pack)) {
                out.bytes_read += check_pack(&path, &dir.join(&pack))?;
            }
            if !seal.files.contains_key(name) {
                out.added += 1;
            }
            out.seal.files.insert(name.clone(), stamp.clone());
            out.seal.files.insert(pack, pack_stamp.clone());
        } else if text == "multi-pack-index" {
            if !unchanged(name) {
                let bytes = std::fs::read(&path).map_err(|e| damage(&path, e.to_string()))?;
                out.bytes_read += bytes.len() as u64;
                check_trailer(&path, &bytes)?;
            }
            out.seal.files.insert(name.clone(), stamp.clone());
        }
    }
    Ok(out)
}

/// Files of the pack directory this module vouches for.
fn covered(name: &OsString) -> bool {
    let text = name.to_string_lossy();
    text == "multi-pack-index"
        || (text.starts_with("pack-") && (text.ends_with(".idx") || text.ends_with(".pack")))
}

fn damage(file: &Path, reason: String) -> Damage {
    Damage {
        file: file.to_path_buf(),
        reason,
    }
}

/// Check one index and its pack; the bytes read.
fn check_pack(idx_path: &Path, pack_path: &Path) -> Result<u64, Damage> {
    let idx = std::fs::read(idx_path).map_err(|e| damage(idx_path, e.to_string()))?;
    let index = parse_index(&idx).map_err(|reason| damage(idx_path, reason))?;
    let mut pack = std::fs::File::open(pack_path).map_err(|e| {
        damage(
            pack_path,
            if e.kind() == std::io::ErrorKind::NotFound {
                "missing (its index is there)".to_string()
            } else {
                e.to_string()
            },
        )
    })?;
    let len = (pack.metadata())
        .map_err(|e| damage(pack_path, e.to_string()))?
        .len();
    let bad = |reason: String| damage(pack_path, reason);
    if len < (PACK_HEADER + HASH) as u64 {
        return Err(bad(format!("{len} bytes: too short for a pack")));
    }
    if let Some(far) = index.max_offset.filter(|o| *o >= len - HASH as u64) {
        return Err(bad(format!(
            "{len} bytes, but its index has an object at offset {far} (cut short?)"
        )));
    }
    // The whole pack once, hashed as it is read; header and trailer kept on the way. `len`
    // is at least 32 bytes, so the first chunk holds the whole header.
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    let body = len - HASH as u64;
    let mut header = [0u8; PACK_HEADER];
    let mut trailer = Vec::with_capacity(HASH);
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let want = usize::try_from(len - at).map_or(buf.len(), |left| left.min(buf.len()));
        pack.read_exact(&mut buf[..want]).map_err(|e| {
            bad(format!(
                "cannot read it whole ({len} bytes when opened): {e}"
            ))
        })?;
        let chunk = &buf[..want];
        if at == 0 {
            header.copy_from_slice(&chunk[..PACK_HEADER]);
        }
        let in_body = usize::try_from(body.saturating_sub(at)).map_or(want, |b| b.min(want));
        hasher.update(&chunk[..in_body]);
        trailer.extend_from_slice(&chunk[in_body..]);
        at += want as u64;
    }
    if &header[..4] != b"PACK" {
        return Err(bad("no PACK header".into()));
    }
    let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if version != 2 && version != 3 {
        return Err(bad(format!("unknown pack version {version}")));
    }
    let objects = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    if objects != index.objects {
        return Err(bad(format!(
            "{objects} objects, but its index lists {}",
            index.objects
        )));
    }
    if trailer[..] != index.pack_checksum[..] {
        return Err(bad(
            "its checksum is not the one its index records (rewritten or cut short?)".into(),
        ));
    }
    if hasher.finish().as_ref() != trailer {
        return Err(bad("its content does not match its checksum".into()));
    }
    Ok(idx.len() as u64 + len)
}

/// What the checks need from an index.
struct IndexFacts {
    objects: u32,
    /// The largest object offset (None: no objects).
    max_offset: Option<u64>,
    /// The pack checksum it was written for.
    pack_checksum: [u8; HASH],
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Check an index's layout and checksum (version 1 or 2).
fn parse_index(idx: &[u8]) -> Result<IndexFacts, String> {
    let len = idx.len();
    if len < FANOUT + 2 * HASH {
        return Err(format!("{len} bytes: too short for a pack index"));
    }
    check_trailer_bytes(idx)?;
    let v2 = idx[..4] == IDX_V2_MAGIC;
    let fan_at = if v2 {
        let version = be32(idx, 4).unwrap_or(0);
        if version != 2 {
            return Err(format!("unknown index version {version}"));
        }
        8
    } else {
        0
    };
    let mut previous = 0;
    for k in 0..256 {
        let n = be32(idx, fan_at + 4 * k).ok_or("cut short in its fan-out table")?;
        if n < previous {
            return Err("its fan-out table is not sorted".into());
        }
        previous = n;
    }
    let objects = previous;
    let n = objects as usize;
    let tables = fan_at + FANOUT;
    let checksum_at = len - 2 * HASH;
    let mut pack_checksum = [0u8; HASH];
    pack_checksum.copy_from_slice(&idx[checksum_at..checksum_at + HASH]);
    let mut max_offset = None;
    if v2 {
        let offsets = tables + n * (HASH + 4);
        let large = offsets + n * 4;
        if large > checksum_at || !(checksum_at - large).is_multiple_of(8) {
            return Err(format!(
                "{len} bytes does not fit {objects} objects (cut short?)"
            ));
        }
        let large_count = (checksum_at - large) / 8;
        for i in 0..n {
            let raw = be32(idx, offsets + 4 * i).ok_or("cut short")?;
            let offset = if raw & 0x8000_0000 == 0 {
                u64::from(raw)
            } else {
                let k = (raw & 0x7fff_ffff) as usize;
                if k >= large_count {
                    return Err(format!("object {i} points past its large-offset table"));
                }
                let at = large + 8 * k;
                let hi = u64::from(be32(idx, at).ok_or("cut short")?);
                let lo = u64::from(be32(idx, at + 4).ok_or("cut short")?);
                (hi << 32) | lo
            };
            if offset < PACK_HEADER as u64 {
                return Err(format!(
                    "object {i} at offset {offset}, inside the pack header"
                ));
            }
            max_offset = max_offset.max(Some(offset));
        }
    } else {
        if tables + n * (4 + HASH) != checksum_at {
            return Err(format!(
                "{len} bytes does not fit {objects} objects (cut short?)"
            ));
        }
        for i in 0..n {
            let offset = u64::from(be32(idx, tables + i * (4 + HASH)).ok_or("cut short")?);
            if offset < PACK_HEADER as u64 {
                return Err(format!(
                    "object {i} at offset {offset}, inside the pack header"
                ));
            }
            max_offset = max_offset.max(Some(offset));
        }
    }
    Ok(IndexFacts {
        objects,
        max_offset,
        pack_checksum,
    })
}

/// The file ends with the SHA-1 of everything before it (indices, multi-pack indices).
fn check_trailer(path: &Path, bytes: &[u8]) -> Result<(), Damage> {
    check_trailer_bytes(bytes).map_err(|reason| damage(path, reason))
}

fn check_trailer_bytes(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < HASH {
        return Err(format!("{} bytes: too short", bytes.len()));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - HASH);
    let sum = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, body);
    if sum.as_ref() != trailer {
        return Err("its content does not match its checksum".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
