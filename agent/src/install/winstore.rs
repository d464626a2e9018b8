//! [`CertStore`] on Windows: a `LocalMachine` system store (`My` or `WebHosting`) through the
//! crypto API, and the http.sys SNI bindings (`hostnameport`) IIS serves from, through
//! `netsh http`. PFX files are imported with `PFXImportCertStore` without `CRYPT_EXPORTABLE`, so
//! the private key cannot be exported again. Certificates are identified by certkeep's SHA-256
//! thumbprint; Windows' SHA-1 hash is looked up where netsh needs it. The unsafe crypto API
//! calls are confined to this module, each with its SAFETY note.
#![allow(unsafe_code)]

use std::{os::windows::process::CommandExt as _, process::Command, ptr};

use certkeep_api_types::{pfx::thumbprint, target::WindowsStore};
use windows_sys::Win32::Security::Cryptography::{
    CERT_CONTEXT, CERT_FRIENDLY_NAME_PROP_ID, CERT_HASH_PROP_ID, CERT_KEY_PROV_INFO_PROP_ID,
    CERT_STORE_ADD_REPLACE_EXISTING, CERT_STORE_PROV_SYSTEM_W, CERT_SYSTEM_STORE_LOCAL_MACHINE,
    CRYPT_INTEGER_BLOB, CRYPT_MACHINE_KEYSET, CertAddCertificateContextToStore, CertCloseStore,
    CertDeleteCertificateFromStore, CertDuplicateCertificateContext, CertEnumCertificatesInStore,
    CertFreeCertificateContext, CertGetCertificateContextProperty, CertOpenStore,
    CertSetCertificateContextProperty, HCERTSTORE, PFXImportCertStore,
};

use super::store::{Binding, CertStore, parse_sslcert};

/// No console window for netsh when the agent runs as a service.
const CREATE_NO_WINDOW: u32 = 0x0800_0000;

/// A UTF-16 string with its terminating NUL.
fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(Some(0)).collect()
}

/// An open certificate store, closed on drop.
struct Store(HCERTSTORE);

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: `self.0` is a store handle this module opened and nothing else closes.
        unsafe { CertCloseStore(self.0, 0) };
    }
}

/// One certificate of a store, as certkeep and Windows name it.
struct Entry {
    /// certkeep's SHA-256 thumbprint of the DER.
    thumbprint: String,
    /// Windows' SHA-1 hash, lowercase hex.
    sha1: String,
    label: Option<String>,
    has_key: bool,
}

/// A property of `ctx` as bytes, or `None` when it has none.
///
/// # Safety
/// `ctx` must be a valid certificate context.
unsafe fn property(ctx: *const CERT_CONTEXT, id: u32) -> Option<Vec<u8>> {
    let mut len = 0u32;
    // SAFETY: size query with a null buffer, as documented; `ctx` is valid per the contract.
    if unsafe { CertGetCertificateContextProperty(ctx, id, ptr::null_mut(), &mut len) } == 0 {
        return None;
    }
    let mut buf = vec![0u8; len as usize];
    // SAFETY: `buf` holds `len` writable bytes.
    let ok =
        unsafe { CertGetCertificateContextProperty(ctx, id, buf.as_mut_ptr().cast(), &mut len) };
    (ok != 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

/// What [`Entry`] needs from `ctx`.
///
/// # Safety
/// `ctx` must be a valid certificate context.
unsafe fn describe(ctx: *const CERT_CONTEXT) -> Entry {
    // SAFETY: a valid context points at `cbCertEncoded` bytes of DER.
    let der =
        unsafe { std::slice::from_raw_parts((*ctx).pbCertEncoded, (*ctx).cbCertEncoded as usize) };
    // SAFETY: `ctx` is valid per the contract.
    let (sha1, label, key) = unsafe {
        (
            property(ctx, CERT_HASH_PROP_ID),
            property(ctx, CERT_FRIENDLY_NAME_PROP_ID),
            property(ctx, CERT_KEY_PROV_INFO_PROP_ID),
        )
    };
    let label = label.map(|bytes| {
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        String::from_utf16_lossy(&units)
    });
    Entry {
        thumbprint: thumbprint(der),
        sha1: sha1.map(|h| hex(&h)).unwrap_or_default(),
        label,
        has_key: key.is_some(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Calls `f` with every certificate of `store` until it returns `true`; that context is
/// returned duplicated (the caller frees or deletes it), else null.
fn find(store: &Store, mut f: impl FnMut(&Entry) -> bool) -> *const CERT_CONTEXT {
    let mut ctx: *const CERT_CONTEXT = ptr::null();
    loop {
        // SAFETY: `store.0` is open; `ctx` is null or the previous context of this enumeration,
        // which the call frees.
        ctx = unsafe { CertEnumCertificatesInStore(store.0, ctx) };
        if ctx.is_null() {
            return ptr::null();
        }
        // SAFETY: the enumeration returned a valid context.
        if f(&unsafe { describe(ctx) }) {
            // SAFETY: `ctx` is valid; the duplicate outlives this enumeration, which we end by
            // freeing `ctx`.
            let dup = unsafe { CertDuplicateCertificateContext(ctx) };
            // SAFETY: `ctx` is valid and no longer used.
            unsafe { CertFreeCertificateContext(ctx) };
            return dup;
        }
    }
}

/// `LocalMachine\<store>` and the machine's SNI bindings.
pub(crate) struct SystemStore {
    store: WindowsStore,
}

impl SystemStore {
    pub(crate) fn new(store: WindowsStore) -> Self {
        Self { store }
    }

    fn open(&self) -> Result<Store, String> {
        let name = wide(self.store.as_str());
        // SAFETY: the provider is a documented constant and `name` a NUL-terminated UTF-16
        // string that lives through the call.
        let h = unsafe {
            CertOpenStore(
                CERT_STORE_PROV_SYSTEM_W,
                0,
                0,
                CERT_SYSTEM_STORE_LOCAL_MACHINE,
                name.as_ptr().cast(),
            )
        };
        if h.is_null() {
            return Err(format!(
                "cannot open LocalMachine\\{}: {}",
                self.store.as_str(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(Store(h))
    }

    /// Every certificate of the store.
    fn entries(&self) -> Result<Vec<Entry>, String> {
        let store = self.open()?;
        let mut all = Vec::new();
        let none = find(&store, |e| {
            all.push(Entry {
                thumbprint: e.thumbprint.clone(),
                sha1: e.sha1.clone(),
                label: e.label.clone(),
                has_key: e.has_key,
            });
            false
        });
        debug_assert!(none.is_null());
        Ok(all)
    }
}

fn netsh(args: &[String]) -> Result<String, String> {
    let out = Command::new("netsh")
        .args(args)
        .creation_flags(CREATE_NO_WINDOW)
        .output()
        .map_err(|e| format!("cannot run netsh: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "netsh {} failed ({}): {}",
            args.join(" "),
            out.status,
            text.trim()
        ))
    }
}

impl CertStore for SystemStore {
    fn contains(&self, thumbprint: &str) -> bool {
        self.entries()
            .is_ok_and(|all| all.iter().any(|e| e.thumbprint == thumbprint))
    }

    fn import(&mut self, pfx: &[u8], password: &str, label: &str) -> Result<(), String> {
        let dest = self.open()?;
        let blob = CRYPT_INTEGER_BLOB {
            cbData: u32::try_from(pfx.len()).map_err(|_| "PFX too large".to_owned())?,
            pbData: pfx.as_ptr().cast_mut(),
        };
        let password = zeroize::Zeroizing::new(wide(password));
        // SAFETY: `blob` points at `pfx`, which the call only reads; `password` is a
        // NUL-terminated UTF-16 string. Without CRYPT_EXPORTABLE the key is not exportable.
        let temp = unsafe { PFXImportCertStore(&blob, password.as_ptr(), CRYPT_MACHINE_KEYSET) };
        if temp.is_null() {
            return Err(format!(
                "PFXImportCertStore: {}",
                std::io::Error::last_os_error()
            ));
        }
        let temp = Store(temp);
        let leaf = find(&temp, |e| e.has_key);
        if leaf.is_null() {
            return Err("the PFX holds no certificate with a private key".into());
        }
        let name = wide(label);
        let name_blob = CRYPT_INTEGER_BLOB {
            cbData: u32::try_from(name.len() * 2).unwrap_or(0),
            pbData: name.as_ptr().cast::<u8>().cast_mut(),
        };
        // SAFETY: `leaf` is a valid context from `find`; `name_blob` points at `name`, alive
        // through the call.
        let labelled = unsafe {
            CertSetCertificateContextProperty(
                leaf,
                CERT_FRIENDLY_NAME_PROP_ID,
                0,
                ptr::from_ref(&name_blob).cast(),
            )
        };
        // SAFETY: `dest` is open and `leaf` valid; no copy is requested back.
        let added = unsafe {
            CertAddCertificateContextToStore(
                dest.0,
                leaf,
                CERT_STORE_ADD_REPLACE_EXISTING,
                ptr::null_mut(),
            )
        };
        let error = std::io::Error::last_os_error();
        // SAFETY: `leaf` is the duplicate `find` returned, used no more.
        unsafe { CertFreeCertificateContext(leaf) };
        if labelled == 0 || added == 0 {
            return Err(format!(
                "cannot add the certificate to LocalMachine\\{}: {error}",
                self.store.as_str()
            ));
        }
        Ok(())
    }

    fn labelled(&self, label: &str) -> Result<Vec<String>, String> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|e| e.label.as_deref() == Some(label))
            .map(|e| e.thumbprint)
            .collect())
    }

    fn remove(&mut self, thumbprint: &str) -> Result<(), String> {
        let store = self.open()?;
        let ctx = find(&store, |e| e.thumbprint == thumbprint);
        if ctx.is_null() {
            return Ok(());
        }
        // SAFETY: `ctx` is the duplicate `find` returned; the call frees it.
        if unsafe { CertDeleteCertificateFromStore(ctx) } == 0 {
            return Err(format!(
                "cannot remove {thumbprint}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    fn bindings(&self) -> Result<Vec<Binding>, String> {
        let entries = self.entries()?;
        let text = netsh(&["http".into(), "show".into(), "sslcert".into()])?;
        Ok(parse_sslcert(&text)
            .into_iter()
            .map(|b| Binding {
                thumbprint: entries
                    .iter()
                    .find(|e| e.sha1 == b.hash)
                    .map(|e| e.thumbprint.clone())
                    .or(Some(b.hash)),
                host: b.host,
                port: b.port,
            })
            .collect())
    }

    fn bind(&mut self, binding: &Binding, thumbprint: &str) -> Result<(), String> {
        let sha1 = self
            .entries()?
            .into_iter()
            .find(|e| e.thumbprint == thumbprint)
            .map(|e| e.sha1)
            .ok_or_else(|| format!("{thumbprint} is not in the store"))?;
        let text = netsh(&["http".into(), "show".into(), "sslcert".into()])?;
        let app_id = parse_sslcert(&text)
            .into_iter()
            .find(|b| b.host.eq_ignore_ascii_case(&binding.host) && b.port == binding.port)
            .map(|b| b.app_id)
            .ok_or_else(|| format!("no SNI binding {}:{}", binding.host, binding.port))?;
        netsh(&[
            "http".into(),
            "update".into(),
            "sslcert".into(),
            format!("hostnameport={}:{}", binding.host, binding.port),
            format!("certhash={sha1}"),
            format!("appid={app_id}"),
            format!("certstorename={}", self.store.as_str()),
        ])
        .map(drop)
    }
}
