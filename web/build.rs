//! Puts the browser tests' fixture (relay URLs and expected ids, written by
//! `web-fixture`; its path in `GRASP_WEB_FIXTURE`) where the tests include it, or `null`
//! when there is none (the tests that need relays then skip).

fn main() {
    println!("cargo:rerun-if-env-changed=GRASP_WEB_FIXTURE");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()));
    let text = match std::env::var("GRASP_WEB_FIXTURE") {
        Ok(path) if !path.is_empty() => {
            println!("cargo:rerun-if-changed={path}");
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("GRASP_WEB_FIXTURE {path}: {e}"))
        }
        _ => "null".to_owned(),
    };
    if let Err(e) = std::fs::write(out.join("fixture.json"), text) {
        panic!("writing the fixture: {e}");
    }
}
