//! Errors the JavaScript API throws: a JS `Error` with a stable string `code`.

use wasm_bindgen::JsValue;

/// An error with one of the codes documented in the API (`invalid-repo`,
/// `invalid-filter`, `invalid-event`, `quota-exceeded`, `upgrade-blocked`, `store`,
/// `closed`, `read-only`, `network`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebError {
    /// The stable code.
    pub code: &'static str,
    /// What happened, for people.
    pub message: String,
}

impl WebError {
    /// An error with `code` and `message`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for WebError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for WebError {}

impl From<WebError> for JsValue {
    fn from(e: WebError) -> Self {
        let error = js_sys::Error::new(&e.message);
        // Setting a property on a fresh Error object cannot fail.
        let _ = js_sys::Reflect::set(&error, &"code".into(), &e.code.into());
        error.into()
    }
}

/// `console.warn(message)`, where there is a console.
pub fn console_warn(message: &str) {
    let console = js_sys::Reflect::get(&js_sys::global(), &"console".into()).ok();
    let warn = console
        .as_ref()
        .and_then(|c| js_sys::Reflect::get(c, &"warn".into()).ok())
        .and_then(|f| wasm_bindgen::JsCast::dyn_into::<js_sys::Function>(f).ok());
    if let (Some(console), Some(warn)) = (console, warn) {
        let _ = warn.call1(&console, &message.into());
    }
}
