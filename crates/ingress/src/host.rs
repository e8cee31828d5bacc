//! Host name normalization, so that `App.Example.COM:8080`, `app.example.com.` and
//! `app.example.com` all find the same route.

/// Longest host name echoed back in an error body: a DNS name has at most 253 characters, so
/// anything longer is not a name we could route and need not be shown in full.
const MAX_ECHOED_HOST: usize = 253;

/// Normalizes a `Host` header value or URI authority: lowercase, port stripped, one trailing dot
/// removed. Returns `None` when nothing routable is left (empty name, malformed port or IPv6
/// literal).
pub(crate) fn normalize(raw: &str) -> Option<String> {
    let raw = raw.trim();
    // Userinfo is not allowed in a Host header, and a URI authority carrying one is not
    // something a browser sends; refuse rather than guess which part is the host.
    if raw.contains('@') {
        return None;
    }
    let name = if let Some(rest) = raw.strip_prefix('[') {
        // IPv6 literal: the port, if any, follows the closing bracket.
        let (inside, after) = rest.split_once(']')?;
        if !valid_port_suffix(after) {
            return None;
        }
        &raw[..inside.len() + 2]
    } else {
        match raw.split_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return None,
            None => raw,
        }
    };
    let name = normalize_name(name);
    (!name.is_empty()).then_some(name)
}

/// Lowercases a host name and removes one trailing dot (the fully qualified spelling).
pub(crate) fn normalize_name(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

/// `""` or `":"` followed by digits only.
fn valid_port_suffix(after: &str) -> bool {
    match after.strip_prefix(':') {
        Some(port) => port.bytes().all(|b| b.is_ascii_digit()),
        None => after.is_empty(),
    }
}

/// The host as shown in an error body: cut at a character boundary so a huge header cannot
/// make the answer huge.
pub(crate) fn for_display(host: &str) -> &str {
    if host.len() <= MAX_ECHOED_HOST {
        return host;
    }
    let mut end = MAX_ECHOED_HOST;
    while !host.is_char_boundary(end) {
        end -= 1;
    }
    &host[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize("App.Example.COM:8080").as_deref(), Some("app.example.com"));
        assert_eq!(normalize("app.example.com.").as_deref(), Some("app.example.com"));
        assert_eq!(normalize("app.example.com.:80").as_deref(), Some("app.example.com"));
        assert_eq!(normalize("x.pods.localhost:").as_deref(), Some("x.pods.localhost"));
        assert_eq!(normalize("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(normalize("[::1]").as_deref(), Some("[::1]"));
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(normalize(""), None);
        assert_eq!(normalize(":80"), None);
        assert_eq!(normalize("."), None);
        assert_eq!(normalize("a:b"), None);
        assert_eq!(normalize("::1"), None);
        assert_eq!(normalize("[::1"), None);
        assert_eq!(normalize("[::1]x"), None);
        assert_eq!(normalize("user@host"), None);
    }

    #[test]
    fn caps_display() {
        let long = "a".repeat(1000);
        assert_eq!(for_display(&long).len(), MAX_ECHOED_HOST);
        assert_eq!(for_display("short"), "short");
    }
}
