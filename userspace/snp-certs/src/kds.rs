//! A client for AMD's Key Distribution Service (KDS): VCEKs and the product's
//! ARK/ASK chain, with bounded retries and an on-disk cache.
//!
//! URLs, as snphost and virtee/sev build them (AMD 57230, "VCEK certificate
//! and KDS interface specification"):
//!
//! * `{base}/vcek/v1/{product}/cert_chain`: PEM, the ASK then the ARK;
//! * `{base}/vcek/v1/{product}/{hwid}?blSPL=BB&teeSPL=TT&snpSPL=SS&ucodeSPL=UU`:
//!   the VCEK, DER; `hwid` is the chip ID in lower-case hex (64 bytes; on
//!   Turin its first 8 bytes, and the query starts with `fmcSPL=FF&`); SPLs
//!   are decimal, at least two digits.
//!
//! KDS rate-limits (HTTP 429) and has outages (5xx). Both are retried with
//! exponential backoff that honours `Retry-After` (seconds or an HTTP date),
//! within a total wait budget: a wait that would exceed it is not started.
//! Other statuses (404: no VCEK for that chip and TCB) are final. Every
//! request has connect and overall timeouts. Bodies are size-limited.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::report::{Product, TcbVersion};

/// AMD's KDS.
pub const DEFAULT_KDS_URL: &str = "https://kdsintf.amd.com";
/// Where fetched VCEKs and chains are kept.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/snp-certs";
/// The system's CA bundle: `SSL_CERT_FILE` if set, else the first of the
/// usual distribution paths that exists.
pub fn system_ca_bundle() -> Option<PathBuf> {
    if let Some(f) = std::env::var_os("SSL_CERT_FILE") {
        return Some(PathBuf::from(f));
    }
    [
        "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Arch
        "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
        "/etc/ssl/ca-bundle.pem",             // openSUSE
        "/etc/ssl/cert.pem",                  // Alpine
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// The HTTPS roots: Mozilla's (webpki-roots, built in), the system
/// bundle's (unreadable or unparsable: skipped), and every certificate of
/// `ca_files` (which must be readable and hold at least one usable one).
pub fn root_store(ca_files: &[PathBuf]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let read = |p: &Path| -> Result<Vec<Vec<u8>>, String> {
        let raw = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        crate::pem::chain_to_der(&raw).map_err(|e| format!("{}: {e}", p.display()))
    };
    if let Some(sys) = system_ca_bundle() {
        if let Ok(certs) = read(&sys) {
            roots.add_parsable_certificates(certs.into_iter().map(Into::into));
        }
    }
    for f in ca_files {
        let (ok, _) = roots.add_parsable_certificates(read(f)?.into_iter().map(Into::into));
        if ok == 0 {
            return Err(format!(
                "{}: no usable CA certificate (--ca-file)",
                f.display()
            ));
        }
    }
    Ok(roots)
}

/// Redirects followed per request (same origin only).
pub const MAX_REDIRECTS: u32 = 5;

/// `scheme://host[:port]` of a URL, lower-case, with the scheme's default
/// port made explicit; None if it is not an http(s) URL.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let auth = rest.split(['/', '?', '#']).next()?;
    let hostport = auth.rsplit('@').next()?.to_ascii_lowercase();
    if hostport.is_empty() {
        return None;
    }
    let has_port = match hostport.rfind(':') {
        Some(i) => !hostport.get(i..)?.contains(']'),
        None => false,
    };
    Some(if has_port {
        format!("{scheme}://{hostport}")
    } else {
        format!("{scheme}://{hostport}:{default}")
    })
}

/// Where a redirect from `from` to `location` leads, if it stays on the same
/// origin (scheme, host and port): a redirect to another host, or from
/// https to http, is refused (the answer would come from someone else).
pub fn redirect_target(from: &str, location: &str) -> Result<String, String> {
    let to = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if location.starts_with('/') && !location.starts_with("//") {
        let o = origin(from).ok_or("not an http(s) URL")?;
        format!("{o}{location}")
    } else {
        return Err(format!("Location {location:?} is not absolute"));
    };
    match (origin(from), origin(&to)) {
        (Some(a), Some(b)) if a == b => Ok(to),
        _ => Err(format!(
            "to {to}: another host, port or scheme (only same-origin redirects are followed)"
        )),
    }
}

/// The host of an http(s) URL (no port, no brackets).
fn host_of(url: &str) -> Option<String> {
    let o = origin(url)?;
    let hp = o.split_once("://")?.1;
    let host = match hp.rfind(':') {
        Some(i) => hp.get(..i)?,
        None => hp,
    };
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
}

/// The proxy for `base` from the environment, as curl reads it: `NO_PROXY`
/// (or `no_proxy`; `*`, or comma-separated host names matching the host or
/// a domain above it) first; then for https `HTTPS_PROXY`, `https_proxy`,
/// and for http `http_proxy` (not `HTTP_PROXY`: CGI "httpoxy"); then
/// `ALL_PROXY`, `all_proxy`. `--proxy` takes precedence over all of them.
pub fn proxy_from_env(base: &str, get: impl Fn(&str) -> Option<String>) -> Option<String> {
    let host = host_of(base)?;
    let set = |k: &str| get(k).filter(|v| !v.trim().is_empty());
    if let Some(no) = set("NO_PROXY").or_else(|| set("no_proxy")) {
        for e in no.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let e = e.trim_start_matches('.').to_ascii_lowercase();
            let e = e.split(':').next().unwrap_or("").to_string();
            if e == "*" || host == e || host.ends_with(&format!(".{e}")) {
                return None;
            }
        }
    }
    let keys: &[&str] = if base.to_ascii_lowercase().starts_with("https://") {
        &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
    } else {
        &["http_proxy", "ALL_PROXY", "all_proxy"]
    };
    keys.iter().find_map(|k| set(k))
}

/// Largest body accepted (a VCEK is ~1.3 KiB, a cert_chain ~4.5 KiB).
pub const MAX_BODY: u64 = 64 * 1024;

/// How requests are retried and timed out.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Requests per URL, the first included.
    pub attempts: u32,
    /// First backoff delay, doubled after each retry (when the server gives
    /// no Retry-After).
    pub base_delay: Duration,
    /// Total time spent waiting between attempts (all URLs of one client),
    /// at most.
    pub max_wait: Duration,
    /// Timeout of one request (connect, send, and read the whole body).
    pub request_timeout: Duration,
    /// Everything (all requests and waits of this client) within this, if
    /// set: `hold --refresh` holds the lock meanwhile.
    pub total: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_secs(1),
            max_wait: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            total: None,
        }
    }
}

/// Why a fetch failed.
#[derive(Debug)]
pub enum KdsError {
    /// No connection, a timeout, or a body cut short, on every attempt.
    Unreachable { url: String, reason: String },
    /// A final HTTP status (not 429 or 5xx).
    Status { url: String, code: u16 },
    /// 429/5xx on every attempt, or the server asked for a wait beyond the
    /// remaining budget.
    GaveUp {
        url: String,
        last: String,
        waited: Duration,
    },
    /// The body is not what the URL serves.
    Body { url: String, reason: String },
}

impl fmt::Display for KdsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KdsError::Unreachable { url, reason } => {
                write!(f, "cannot reach KDS at {url}: {reason}")
            }
            KdsError::Status { url, code: 404 } => write!(
                f,
                "KDS has nothing at {url} (HTTP 404): no such certificate for this product, chip and TCB"
            ),
            KdsError::Status { url, code } => write!(f, "KDS answered HTTP {code} for {url}"),
            KdsError::GaveUp { url, last, waited } => write!(
                f,
                "KDS kept refusing {url} ({last}); gave up after waiting {:.1} s in total",
                waited.as_secs_f64()
            ),
            KdsError::Body { url, reason } => write!(f, "unusable answer from {url}: {reason}"),
        }
    }
}

impl std::error::Error for KdsError {}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The cert_chain URL of `product`.
pub fn cert_chain_url(base: &str, product: Product) -> String {
    format!(
        "{}/vcek/v1/{}/cert_chain",
        base.trim_end_matches('/'),
        product
    )
}

/// The CRL URL of `product` (DER, signed by the ARK).
pub fn crl_url(base: &str, product: Product) -> String {
    format!("{}/vcek/v1/{}/crl", base.trim_end_matches('/'), product)
}

/// The VCEK URL for `hwid` (already cut to [`Product::hwid_len`]) and `tcb`.
pub fn vcek_url(base: &str, product: Product, hwid: &[u8], tcb: &TcbVersion) -> String {
    let fmc = tcb
        .fmc
        .map(|f| format!("fmcSPL={f:02}&"))
        .unwrap_or_default();
    format!(
        "{}/vcek/v1/{}/{}?{fmc}blSPL={:02}&teeSPL={:02}&snpSPL={:02}&ucodeSPL={:02}",
        base.trim_end_matches('/'),
        product,
        hex(hwid),
        tcb.bootloader,
        tcb.tee,
        tcb.snp,
        tcb.microcode
    )
}

/// Parses a `Retry-After` value: delay-seconds, or an HTTP date (IMF-fixdate,
/// `Sun, 06 Nov 1994 08:49:37 GMT`) taken relative to `now`. `None` if it is
/// neither (the caller then uses its own backoff).
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // IMF-fixdate: "Day, DD Mon YYYY HH:MM:SS GMT".
    let mut it = v.split_ascii_whitespace();
    let (_day, d, mon, y, hms, gmt) = (
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
    );
    if gmt != "GMT" || it.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == mon)?;
    let month = u8::try_from(month).ok()?.checked_add(1)?;
    let mut t = hms.split(':');
    let (h, mi, s) = (t.next()?, t.next()?, t.next()?);
    let at = x509_cert::der::DateTime::new(
        y.parse().ok()?,
        month,
        d.parse().ok()?,
        h.parse().ok()?,
        mi.parse().ok()?,
        s.parse().ok()?,
    )
    .ok()?
    .unix_duration();
    let now = now.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    Some(at.saturating_sub(now))
}

/// One attempt's outcome.
enum Attempt {
    Done(Vec<u8>),
    /// A redirect to this URL on the same origin.
    Redirect(String),
    /// Worth retrying: why, and the server's Retry-After if any.
    Retry(String, Option<Duration>, bool),
    Final(KdsError),
}

/// A product's chain as KDS serves it.
pub struct Chain {
    pub ask: Vec<u8>,
    pub ark: Vec<u8>,
    /// The PEM text (what the cache keeps).
    pub pem: Vec<u8>,
    pub source: Source,
}

/// Where a fetched certificate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Kds,
    Cache,
}

/// The KDS client.
pub struct Kds {
    base: String,
    agent: ureq::Agent,
    policy: RetryPolicy,
    cache: Option<PathBuf>,
    /// Requests sent (for messages and tests).
    requests: u32,
    /// Time waited between attempts so far (all URLs).
    waited: Duration,
    /// End of the `total` budget.
    deadline: Option<Instant>,
    /// An unsafe cache directory was warned about.
    cache_warned: std::cell::Cell<bool>,
}

impl Kds {
    /// A client for the KDS at `base` (e.g. [`DEFAULT_KDS_URL`]), caching
    /// under `cache` if given, through the HTTP proxy `proxy`
    /// (`http://[user:password@]host:port`) if given.
    pub fn new(
        base: &str,
        policy: RetryPolicy,
        cache: Option<PathBuf>,
        proxy: Option<&str>,
    ) -> Result<Kds, String> {
        Kds::with_roots(base, policy, cache, proxy, &[])
    }

    /// [`Kds::new`], trusting for HTTPS Mozilla's roots (built in), the
    /// system's trust store ([`system_ca_bundle`]) and the certificates in
    /// `ca_files`.
    pub fn with_roots(
        base: &str,
        policy: RetryPolicy,
        cache: Option<PathBuf>,
        proxy: Option<&str>,
        ca_files: &[PathBuf],
    ) -> Result<Kds, String> {
        let roots = root_store(ca_files)?;
        let tls = rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut b = ureq::AgentBuilder::new()
            .tls_config(std::sync::Arc::new(tls))
            // Redirects are followed by `get`, on the same origin only.
            .redirects(0)
            .timeout_connect(policy.request_timeout)
            .timeout(policy.request_timeout)
            .user_agent(concat!("snp-certs/", env!("CARGO_PKG_VERSION")));
        let env_proxy = match proxy {
            Some(_) => None,
            None => proxy_from_env(base, |k| std::env::var(k).ok()),
        };
        if let Some(p) = proxy.or(env_proxy.as_deref()) {
            b = b.proxy(ureq::Proxy::new(p).map_err(|e| format!("proxy {p:?}: {e}"))?);
        }
        let agent = b.build();
        let deadline = policy.total.and_then(|t| Instant::now().checked_add(t));
        Ok(Kds {
            base: base.trim_end_matches('/').to_string(),
            agent,
            policy,
            cache,
            requests: 0,
            waited: Duration::ZERO,
            deadline,
            cache_warned: std::cell::Cell::new(false),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// HTTP requests sent so far.
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// Time left of the `total` budget (None: no budget).
    fn left(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    fn attempt(&mut self, url: &str) -> Attempt {
        let timeout = match self.left() {
            Some(left) if left.is_zero() => {
                return Attempt::Final(KdsError::Unreachable {
                    url: url.to_string(),
                    reason: format!("the {:.1} s time budget is spent", self.budget_secs()),
                })
            }
            Some(left) => left.min(self.policy.request_timeout),
            None => self.policy.request_timeout,
        };
        self.requests = self.requests.saturating_add(1);
        let resp = match self.agent.get(url).timeout(timeout).call() {
            Ok(r) if (300..400).contains(&r.status()) => {
                let code = r.status();
                return match r.header("Location").map(|l| redirect_target(url, l)) {
                    Some(Ok(to)) => Attempt::Redirect(to),
                    Some(Err(why)) => Attempt::Final(KdsError::Unreachable {
                        url: url.to_string(),
                        reason: format!("HTTP {code} redirect refused: {why}"),
                    }),
                    None => Attempt::Final(KdsError::Status {
                        url: url.to_string(),
                        code,
                    }),
                };
            }
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                let ra = r
                    .header("Retry-After")
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                return if code == 429 || (500..=599).contains(&code) {
                    Attempt::Retry(format!("HTTP {code}"), ra, true)
                } else {
                    Attempt::Final(KdsError::Status {
                        url: url.to_string(),
                        code,
                    })
                };
            }
            Err(ureq::Error::Transport(t)) => {
                // Kind, message and cause, without the URL that ureq's
                // Display repeats.
                let mut why = t.kind().to_string();
                for part in [
                    t.message().map(str::to_string),
                    std::error::Error::source(&t).map(|e| e.to_string()),
                ]
                .into_iter()
                .flatten()
                {
                    why.push_str(": ");
                    why.push_str(&part);
                }
                use ureq::ErrorKind as K;
                return match t.kind() {
                    // A retry cannot fix these.
                    K::InvalidUrl
                    | K::UnknownScheme
                    | K::InvalidProxyUrl
                    | K::ProxyUnauthorized
                    | K::TooManyRedirects
                    | K::InsecureRequestHttpsOnly => Attempt::Final(KdsError::Unreachable {
                        url: url.to_string(),
                        reason: why,
                    }),
                    _ => Attempt::Retry(why, None, false),
                };
            }
        };
        let mut body = Vec::new();
        match resp
            .into_reader()
            .take(MAX_BODY.saturating_add(1))
            .read_to_end(&mut body)
        {
            Ok(_) if body.len() as u64 > MAX_BODY => Attempt::Final(KdsError::Body {
                url: url.to_string(),
                reason: format!("larger than {MAX_BODY} bytes"),
            }),
            Ok(_) => Attempt::Done(body),
            // A body cut short (connection closed before Content-Length
            // bytes) or a read timeout: transient.
            Err(e) => Attempt::Retry(format!("reading the body: {e}"), None, false),
        }
    }

    fn budget_secs(&self) -> f64 {
        self.policy.total.unwrap_or_default().as_secs_f64()
    }

    /// GET `url` with the retry policy.
    pub fn get(&mut self, url: &str) -> Result<Vec<u8>, KdsError> {
        let first = url;
        let mut current = url.to_string();
        let mut redirects = 0u32;
        let mut delay = self.policy.base_delay;
        let mut tries = 0u32;
        loop {
            let url = current.as_str();
            tries = tries.saturating_add(1);
            let (why, retry_after, http) = match self.attempt(url) {
                Attempt::Done(b) => return Ok(b),
                Attempt::Redirect(to) => {
                    redirects = redirects.saturating_add(1);
                    if redirects > MAX_REDIRECTS {
                        return Err(KdsError::Unreachable {
                            url: first.to_string(),
                            reason: format!("more than {MAX_REDIRECTS} redirects"),
                        });
                    }
                    tries = 0;
                    current = to;
                    continue;
                }
                Attempt::Final(e) => return Err(e),
                Attempt::Retry(why, ra, http) => (why, ra, http),
            };
            let waited = self.waited;
            let fail = |why: String, waited: Duration| {
                if http {
                    KdsError::GaveUp {
                        url: url.to_string(),
                        last: why,
                        waited,
                    }
                } else {
                    KdsError::Unreachable {
                        url: url.to_string(),
                        reason: why,
                    }
                }
            };
            if tries >= self.policy.attempts {
                return Err(fail(format!("{why}; {tries} attempts"), waited));
            }
            let wait = retry_after.unwrap_or(delay);
            let left = self.policy.max_wait.saturating_sub(waited);
            if let Some(total_left) = self.left().filter(|l| wait >= *l) {
                return Err(fail(
                    format!(
                        "{why}; waiting {:.1} s more would pass the {:.1} s time budget ({:.1} s left)",
                        wait.as_secs_f64(),
                        self.budget_secs(),
                        total_left.as_secs_f64()
                    ),
                    waited,
                ));
            }
            if wait > left {
                let asked = match retry_after {
                    Some(ra) => format!("Retry-After {} s", ra.as_secs()),
                    None => format!("backoff {:.1} s", wait.as_secs_f64()),
                };
                return Err(fail(
                    format!(
                        "{why}; {asked} exceeds the {:.1} s left of the {:.1} s wait budget",
                        left.as_secs_f64(),
                        self.policy.max_wait.as_secs_f64()
                    ),
                    waited,
                ));
            }
            let _ = writeln!(
                std::io::stderr(),
                "snp-certs: {url}: {why}; retrying in {:.1} s",
                wait.as_secs_f64()
            );
            std::thread::sleep(wait);
            self.waited = self.waited.saturating_add(wait);
            delay = delay.saturating_mul(2);
        }
    }

    /// The product's ASK and ARK (DER), from the cache (if `use_cache`) or KDS.
    pub fn cert_chain(&mut self, product: Product, use_cache: bool) -> Result<Chain, KdsError> {
        let key = CacheKey::Chain(product).path();
        let url = cert_chain_url(&self.base, product);
        let (pem, source) = self.cached_get(&key, &url, use_cache)?;
        let certs = crate::pem::chain_to_der(&pem).map_err(|e| KdsError::Body {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        match <[Vec<u8>; 2]>::try_from(certs) {
            Ok([ask, ark]) => Ok(Chain {
                ask,
                ark,
                pem,
                source,
            }),
            Err(c) => Err(KdsError::Body {
                url,
                reason: format!(
                    "{} certificate(s); a cert_chain holds two, the ASK then the ARK",
                    c.len()
                ),
            }),
        }
    }

    /// The product's CRL (DER), always from KDS: a CRL changes, so it is not
    /// cached.
    pub fn crl(&mut self, product: Product) -> Result<Vec<u8>, KdsError> {
        self.get(&crl_url(&self.base, product))
    }

    /// The VCEK (DER) for `hwid` and `tcb`, from the cache (if `use_cache`)
    /// or KDS.
    pub fn vcek(
        &mut self,
        product: Product,
        hwid: &[u8],
        tcb: &TcbVersion,
        use_cache: bool,
    ) -> Result<(Vec<u8>, Source), KdsError> {
        let key = CacheKey::Vcek(product, hwid, tcb).path();
        let url = vcek_url(&self.base, product, hwid, tcb);
        let (body, src) = self.cached_get(&key, &url, use_cache)?;
        let der = crate::pem::to_der(&body).map_err(|e| KdsError::Body {
            url,
            reason: format!("not a DER certificate: {e}"),
        })?;
        Ok((der, src))
    }

    /// The entry `key` of this KDS's part of the cache: entries are kept
    /// per KDS origin ([`origin_dir`]), so a test run against another
    /// `--kds-url` never feeds a later refresh from AMD's KDS.
    fn cache_path(&self, key: &str) -> Option<PathBuf> {
        self.cache
            .as_ref()
            .map(|d| d.join(origin_dir(&self.base)).join(key))
    }

    fn cached_get(
        &mut self,
        key: &str,
        url: &str,
        use_cache: bool,
    ) -> Result<(Vec<u8>, Source), KdsError> {
        if let Some(p) = self.cache_path(key).filter(|_| use_cache) {
            if self.cache_dirs_safe(&p) {
                let mut b = Vec::new();
                let read = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                    .open(&p)
                    .and_then(|f| {
                        if f.metadata()?.is_file() {
                            f.take(MAX_BODY.saturating_add(1)).read_to_end(&mut b)
                        } else {
                            Err(std::io::Error::other("not a regular file"))
                        }
                    });
                // Unreadable, empty or oversized entries are ignored (and
                // replaced once the fetched certificates verify). What is
                // read is verified again by the caller, like a fetch.
                if read.is_ok() && !b.is_empty() && b.len() as u64 <= MAX_BODY {
                    return Ok((b, Source::Cache));
                }
            }
        }
        let b = self.get(url)?;
        Ok((b, Source::Kds))
    }

    /// Every directory from the cache directory down to `entry`'s parent
    /// that exists must be a real directory (not a symbolic link), owned by
    /// us or root, and writable by nobody else: otherwise another local user
    /// could plant certificates (they would still have to verify, but could
    /// pin an old VCEK) or redirect writes. An unsafe cache is not used
    /// (warned about once).
    fn cache_dirs_safe(&self, entry: &Path) -> bool {
        let Some(root) = &self.cache else {
            return false;
        };
        // SAFETY: geteuid(2) takes no arguments, touches no memory and
        // cannot fail.
        let euid = unsafe { nix::libc::geteuid() };
        let mut dirs: Vec<&Path> = entry
            .ancestors()
            .skip(1)
            .take_while(|d| d.starts_with(root))
            .collect();
        dirs.reverse();
        for d in dirs {
            let m = match std::fs::symlink_metadata(d) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
                Err(_) => return false,
            };
            let why = if !m.file_type().is_dir() {
                Some("not a directory (or a symbolic link)".to_string())
            } else if m.uid() != euid && m.uid() != 0 {
                Some(format!("owned by uid {}, not by us or root", m.uid()))
            } else if m.mode() & 0o022 != 0 {
                Some(format!(
                    "mode {:o}: writable by group or others",
                    m.mode() & 0o7777
                ))
            } else {
                None
            };
            if let Some(why) = why {
                if !self.cache_warned.replace(true) {
                    let _ = writeln!(
                        std::io::stderr(),
                        "snp-certs: warning: not using the cache: {}: {why}",
                        d.display()
                    );
                }
                return false;
            }
        }
        true
    }

    /// Stores a fetched body in the cache (call once it verified). Errors
    /// are warnings: the cache only saves requests.
    pub fn remember(&self, key_kind: CacheKey<'_>, body: &[u8]) {
        let Some(p) = self.cache_path(&key_kind.path()) else {
            return;
        };
        let res = create_dirs(&p).and_then(|()| {
            if self.cache_dirs_safe(&p) {
                write_atomic(&p, body)
            } else {
                Ok(())
            }
        });
        if let Err(e) = res {
            let _ = writeln!(
                std::io::stderr(),
                "snp-certs: warning: cannot cache {}: {e}",
                p.display()
            );
        }
    }

    /// Drops a cache entry (it did not verify).
    pub fn forget(&self, key_kind: CacheKey<'_>) {
        if let Some(p) = self.cache_path(&key_kind.path()) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A cache entry: the product's chain, or one VCEK.
#[derive(Clone, Copy, Debug)]
pub enum CacheKey<'a> {
    Chain(Product),
    Vcek(Product, &'a [u8], &'a TcbVersion),
}

impl CacheKey<'_> {
    /// Relative path under the cache directory: `cert_chain/PRODUCT.pem`,
    /// `vcek/PRODUCT/HWID/[fmc=F,]bl=B,tee=T,snp=S,ucode=U.der`.
    pub fn path(&self) -> String {
        match self {
            CacheKey::Chain(p) => format!("cert_chain/{p}.pem"),
            CacheKey::Vcek(p, hwid, tcb) => format!("vcek/{p}/{}/{tcb}.der", hex(hwid)),
        }
    }
}

/// The cache subdirectory of a KDS base URL: scheme, host, port and path
/// with every character but `[a-z0-9.-]` as `_`, e.g. `https_kdsintf.amd.com`,
/// `http_127.0.0.1_18080`.
pub fn origin_dir(base: &str) -> String {
    base.trim_end_matches('/')
        .to_ascii_lowercase()
        .replacen("://", "_", 1)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Creates the directories above `path` (mode 0755 before the umask).
fn create_dirs(path: &Path) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
}

static TMP_N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Writes `body` to `path` through a temporary file and a rename, so a
/// reader never sees half a certificate. The temporary has an unpredictable
/// name and is created with `O_EXCL | O_NOFOLLOW` (a planted file or
/// symbolic link makes it fail, never write elsewhere), mode 0644.
fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = TMP_N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{n}.{nanos:x}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_match_snphost_and_virtee() {
        let tcb = TcbVersion {
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
            fmc: None,
        };
        assert_eq!(
            vcek_url(
                "https://kdsintf.amd.com/",
                Product::Milan,
                &[0xab, 0x01],
                &tcb
            ),
            "https://kdsintf.amd.com/vcek/v1/Milan/ab01?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"
        );
        let turin = TcbVersion {
            fmc: Some(1),
            ..tcb
        };
        assert_eq!(
            vcek_url("http://x", Product::Turin, &[0; 8], &turin),
            "http://x/vcek/v1/Turin/0000000000000000?fmcSPL=01&blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"
        );
        assert_eq!(
            cert_chain_url("http://x", Product::Genoa),
            "http://x/vcek/v1/Genoa/cert_chain"
        );
        assert_eq!(
            crl_url("http://x/", Product::Milan),
            "http://x/vcek/v1/Milan/crl"
        );
    }

    #[test]
    fn roots_are_mozillas_plus_the_system_store_plus_ca_files() {
        let builtin = webpki_roots::TLS_SERVER_ROOTS.len();
        let base = root_store(&[]).unwrap().roots.len();
        assert!(base >= builtin);
        // AMD's Milan ARK (any CA certificate will do) as --ca-file.
        let d = std::env::temp_dir().join(format!("snp-certs-kds-ca-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("ca.pem");
        std::fs::write(&f, include_bytes!("amd/milan-ark.pem")).unwrap();
        assert_eq!(
            root_store(std::slice::from_ref(&f)).unwrap().roots.len(),
            base + 1
        );
        std::fs::write(&f, b"not a certificate").unwrap();
        assert!(root_store(std::slice::from_ref(&f)).is_err());
        assert!(root_store(&[d.join("missing")]).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn redirects_only_within_the_origin() {
        let u = "https://kdsintf.amd.com/vcek/v1/Milan/cert_chain";
        assert_eq!(
            redirect_target(u, "/vcek/v1/Milan/cert_chain2"),
            Ok("https://kdsintf.amd.com:443/vcek/v1/Milan/cert_chain2".into())
        );
        assert!(redirect_target(u, "https://kdsintf.amd.com:443/x").is_ok());
        for bad in [
            "http://kdsintf.amd.com/x",
            "https://evil.example/x",
            "https://kdsintf.amd.com:8443/x",
            "//evil.example/x",
            "x/y",
            "ftp://kdsintf.amd.com/x",
        ] {
            assert!(redirect_target(u, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn proxy_environment_as_curl_reads_it() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let amd = "https://kdsintf.amd.com";
        assert_eq!(
            proxy_from_env(amd, env(&[("HTTPS_PROXY", "http://p:3128")])),
            Some("http://p:3128".into())
        );
        assert_eq!(
            proxy_from_env(amd, env(&[("https_proxy", "http://p:1")])),
            Some("http://p:1".into())
        );
        // http_proxy is not for https; HTTP_PROXY is never read.
        assert_eq!(
            proxy_from_env(amd, env(&[("http_proxy", "http://p:1")])),
            None
        );
        assert_eq!(
            proxy_from_env("http://x", env(&[("HTTP_PROXY", "http://p:1")])),
            None
        );
        assert_eq!(
            proxy_from_env(amd, env(&[("ALL_PROXY", "http://a:1")])),
            Some("http://a:1".into())
        );
        for no in [
            "amd.com",
            ".amd.com",
            "kdsintf.amd.com",
            "*",
            "x, amd.com:443",
        ] {
            let pairs: &'static [(&str, &str)] =
                Box::leak(Box::new([("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", no)]));
            assert_eq!(proxy_from_env(amd, env(pairs)), None, "{no}");
        }
        assert_eq!(
            proxy_from_env(
                amd,
                env(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "md.com")])
            ),
            Some("http://p:1".into())
        );
    }

    #[test]
    fn retry_after_forms() {
        // RFC 9110's example date, 784111777 s after the epoch.
        let epoch = SystemTime::UNIX_EPOCH;
        let at = |s: u64| epoch + Duration::from_secs(s);
        assert_eq!(
            parse_retry_after("120", at(0)),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", at(0)), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at(784_111_777 - 30)),
            Some(Duration::from_secs(30))
        );
        // A date in the past: retry now.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at(784_111_777 + 5)),
            Some(Duration::ZERO)
        );
        for bad in [
            "",
            "-1",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 06 Foo 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, at(0)), None, "{bad}");
        }
    }
}
