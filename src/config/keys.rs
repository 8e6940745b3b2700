//! The keys a gateway cannot run without: the backoffice's API keys and the data key that
//! seals phone numbers at rest. With no configuration file they may be generated into the
//! data directory (the SQLite file's directory), so a fresh clone runs; never otherwise.

use std::path::{Path, PathBuf};

use super::{RawSettings, Source};
use crate::secret::Secret;
use crate::store::SqliteTarget;

/// `backoffice.api_keys` and `privacy.data_key`, generated when allowed.
pub(super) fn check(
    raw: &RawSettings,
    source: Source,
    generate: bool,
    data_dir: &Path,
    p: &mut Vec<String>,
    notices: &mut Vec<String>,
) -> (Vec<Secret>, Secret) {
    let mut api_keys: Vec<Secret> = raw
        .backoffice
        .api_keys
        .iter()
        .filter(|k| !k.expose().is_empty())
        .cloned()
        .collect();
    if api_keys.iter().any(|k| k.expose().len() < 16) {
        p.push("backoffice.api_keys: every key must be at least 16 characters".into());
    }
    if api_keys.is_empty() {
        if source == Source::NoFile && generate {
            match generated_file(data_dir, "api_key", || {
                hex::encode(rand::random::<[u8; 24]>())
            }) {
                Ok((key, created)) => {
                    notices.push(format!(
                        "no backoffice.api_keys configured: {} the development API key in {}",
                        if created { "generated" } else { "using" },
                        data_dir.join("api_key").display()
                    ));
                    api_keys.push(Secret::new(key));
                }
                Err(e) => p.push(format!(
                    "backoffice.api_keys: none configured and cannot write {}: {e}",
                    data_dir.display()
                )),
            }
        } else {
            p.push("backoffice.api_keys: at least one key is required".into());
        }
    }

    let data_key = match &raw.privacy.data_key {
        Some(k) => {
            if crate::privacy::Privacy::from_base64(k.expose()).is_err() {
                p.push("privacy.data_key: must be base64 of exactly 32 bytes".into());
            }
            k.clone()
        }
        None if source == Source::NoFile && generate => {
            match crate::privacy::Privacy::load_or_generate(data_dir) {
                Ok((k, created)) => {
                    notices.push(format!(
                    "no privacy.data_key configured: {} the data key in {} (back it up: without it stored phone numbers cannot be read)",
                    if created { "generated" } else { "using" },
                    data_dir.join("data_key").display()
                ));
                    Secret::new(k)
                }
                Err(e) => {
                    p.push(format!(
                        "privacy.data_key: not set and cannot create one in {}: {e}",
                        data_dir.display()
                    ));
                    Secret::new("")
                }
            }
        }
        None => {
            p.push("privacy.data_key: is required (base64 of 32 random bytes, e.g. `openssl rand -base64 32`)".into());
            Secret::new("")
        }
    };
    (api_keys, data_key)
}

/// The directory generated keys go to: the SQLite file's directory, or `./data`.
pub(super) fn database_data_dir(url: &str) -> Result<PathBuf, String> {
    if let Some(target) = SqliteTarget::of(url) {
        let path = match target {
            SqliteTarget::File { path, .. } if !path.is_empty() => path,
            _ => return Ok(PathBuf::from("data")),
        };
        let parent = Path::new(path)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        return Ok(if parent.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            parent
        });
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        url::Url::parse(url).map_err(|e| format!("cannot parse the PostgreSQL URL ({e})"))?;
        return Ok(PathBuf::from("data"));
    }
    Err("expected sqlite://PATH or postgres://USER:PASSWORD@HOST/DB".into())
}

fn generated_file(
    dir: &Path,
    name: &str,
    make: impl FnOnce() -> String,
) -> std::io::Result<(String, bool)> {
    crate::privacy::read_or_create(&dir.join(name), make)
}
