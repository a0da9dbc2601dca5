//! The operator API's secret: a daemon writes a fresh random token into its data
//! directory (readable by its owner only) each time it starts, and answers `/api/*`
//! only to requests that present it as `Authorization: Bearer <token>`. So the API is
//! reachable by whoever can read the data directory — the operator's own `grasp-sync
//! status` and `sync` — and by nobody else, wherever the request comes from (behind a
//! reverse proxy every request comes from loopback).

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The token file's name in the data directory.
pub const TOKEN_FILE: &str = "api-token";
/// Random bytes in a token (written as hex).
const TOKEN_BYTES: usize = 32;

/// Where the token of `data_dir` lives.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// Makes a new token and writes it to the data directory, replacing any earlier one,
/// with owner-only permissions (the file is written under another name and renamed, so
/// a reader never sees half a token).
pub fn create(data_dir: &Path) -> std::io::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = token_path(data_dir);
    let partial = data_dir.join(format!("{TOKEN_FILE}.partial"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&partial)?;
    // An earlier file of the same name may have had wider permissions.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, &path)?;
    Ok(token)
}

/// The token a running daemon wrote into `data_dir`.
pub fn read(data_dir: &Path) -> std::io::Result<String> {
    let path = token_path(data_dir);
    std::fs::read_to_string(&path)
        .map(|text| text.trim().to_owned())
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Whether an `Authorization` header value presents `token` (compared in constant
/// time over the presented length, so timing tells nothing of the token).
pub fn authorizes(header: Option<&str>, token: &str) -> bool {
    let Some(presented) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let presented = presented.trim().as_bytes();
    let expected = token.as_bytes();
    if presented.len() != expected.len() || expected.is_empty() {
        return false;
    }
    presented
        .iter()
        .zip(expected)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_fresh_owner_only_and_checked_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let first = create(dir.path()).unwrap();
        assert_eq!(first.len(), 2 * TOKEN_BYTES);
        assert_eq!(read(dir.path()).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(token_path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let second = create(dir.path()).unwrap();
        assert_ne!(first, second, "each start makes a new token");
        assert!(authorizes(Some(&format!("Bearer {second}")), &second));
        assert!(!authorizes(Some(&format!("Bearer {first}")), &second));
        assert!(
            !authorizes(Some(&second), &second),
            "the scheme is required"
        );
        assert!(!authorizes(Some("Bearer "), &second));
        assert!(!authorizes(None, &second));
        assert!(!authorizes(Some("Bearer x"), ""));
    }
}
