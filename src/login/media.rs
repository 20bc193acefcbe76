//! The media type of a watched login body, parsed strictly (RFC 9110 8.3.1), because the app
//! decodes the body by it: Tomcat reads `charset =ibm037` (a space before `=`) as EBCDIC, where
//! a lenient reader sees no charset at all and decodes UTF-8. Only the two login body types are
//! read, with no parameter but `charset`, and that only as UTF-8 or US-ASCII; any other
//! spelling is refused rather than guessed.

/// The login body types the proxy reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginMedia {
    /// `application/x-www-form-urlencoded`
    Form,
    /// `application/json`
    Json,
}

/// The charset a login body is declared in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// No charset parameter, or `utf-8`.
    Utf8,
    /// `us-ascii`: the body must then be ASCII.
    Ascii,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaError {
    /// Not `type "/" subtype *( OWS ";" OWS name "=" value )` to the letter.
    Malformed,
    /// A type other than the two login body types.
    Unsupported,
    /// A parameter other than one `charset`.
    Parameter,
    /// A charset other than UTF-8 or US-ASCII.
    Charset,
}

/// Parses one `Content-Type` value of a login body.
pub fn login_media(value: &[u8]) -> Result<(LoginMedia, Charset), MediaError> {
    let mut p = Parser { rest: value };
    let kind = p.token()?;
    p.expect(b'/')?;
    let subtype = p.token()?;
    let media = if kind.eq_ignore_ascii_case(b"application") {
        if subtype.eq_ignore_ascii_case(b"x-www-form-urlencoded") {
            LoginMedia::Form
        } else if subtype.eq_ignore_ascii_case(b"json") {
            LoginMedia::Json
        } else {
            return Err(MediaError::Unsupported);
        }
    } else {
        return Err(MediaError::Unsupported);
    };
    let mut charset = None;
    loop {
        p.ows();
        if p.rest.is_empty() {
            break;
        }
        p.expect(b';')?;
        p.ows();
        if p.rest.is_empty() {
            break;
        }
        // RFC 9110 allows empty parameters (`;;`); a strict reader may not.
        if p.rest.first() == Some(&b';') {
            return Err(MediaError::Malformed);
        }
        let name = p.token()?;
        p.expect(b'=')?;
        let value = p.value()?;
        if !name.eq_ignore_ascii_case(b"charset") || charset.is_some() {
            return Err(MediaError::Parameter);
        }
        charset = Some(if value.eq_ignore_ascii_case(b"utf-8") {
            Charset::Utf8
        } else if value.eq_ignore_ascii_case(b"us-ascii") {
            Charset::Ascii
        } else {
            return Err(MediaError::Charset);
        });
    }
    Ok((media, charset.unwrap_or(Charset::Utf8)))
}

struct Parser<'a> {
    rest: &'a [u8],
}

impl<'a> Parser<'a> {
    fn token(&mut self) -> Result<&'a [u8], MediaError> {
        let len = self.rest.iter().take_while(|&&b| is_tchar(b)).count();
        if len == 0 {
            return Err(MediaError::Malformed);
        }
        let (token, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(token)
    }

    fn expect(&mut self, byte: u8) -> Result<(), MediaError> {
        match self.rest.split_first() {
            Some((&b, rest)) if b == byte => {
                self.rest = rest;
                Ok(())
            }
            _ => Err(MediaError::Malformed),
        }
    }

    fn ows(&mut self) {
        while let Some((b' ' | b'\t', rest)) = self.rest.split_first() {
            self.rest = rest;
        }
    }

    /// A token or a quoted string; a quoted value is returned only if it holds no escapes
    /// (`"utf\-8"` is read differently by different parsers).
    fn value(&mut self) -> Result<&'a [u8], MediaError> {
        if self.rest.first() != Some(&b'"') {
            return self.token();
        }
        let body = &self.rest[1..];
        let end = body
            .iter()
            .position(|&b| b == b'"')
            .ok_or(MediaError::Malformed)?;
        let inner = &body[..end];
        if !inner.iter().all(|&b| is_tchar(b)) {
            return Err(MediaError::Malformed);
        }
        self.rest = &body[end + 1..];
        Ok(inner)
    }
}

/// RFC 9110 5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_media_types() {
        use Charset::*;
        use LoginMedia::*;
        for (value, want) in [
            ("application/x-www-form-urlencoded", (Form, Utf8)),
            ("Application/X-WWW-Form-URLEncoded", (Form, Utf8)),
            (
                "application/x-www-form-urlencoded; charset=UTF-8",
                (Form, Utf8),
            ),
            (
                "application/x-www-form-urlencoded;charset=utf-8",
                (Form, Utf8),
            ),
            (
                "application/x-www-form-urlencoded ; charset=\"utf-8\"",
                (Form, Utf8),
            ),
            ("application/json", (Json, Utf8)),
            ("application/json;  charset=us-ascii ", (Json, Ascii)),
            ("application/json;", (Json, Utf8)),
        ] {
            assert_eq!(login_media(value.as_bytes()), Ok(want), "{value:?}");
        }
        for (value, err) in [
            (
                "application/x-www-form-urlencoded; charset =ibm037",
                MediaError::Malformed,
            ),
            (
                "application/x-www-form-urlencoded; charset= utf-8",
                MediaError::Malformed,
            ),
            (
                "application/x-www-form-urlencoded; charset=ibm037",
                MediaError::Charset,
            ),
            (
                "application/x-www-form-urlencoded; CHARSET=IBM037",
                MediaError::Charset,
            ),
            (
                "application/x-www-form-urlencoded; charset=\"ibm037\"",
                MediaError::Charset,
            ),
            (
                "application/x-www-form-urlencoded; charset=utf-16",
                MediaError::Charset,
            ),
            (
                "application/x-www-form-urlencoded; charset=utf8",
                MediaError::Charset,
            ),
            (
                "application/x-www-form-urlencoded; charset=\"utf\\-8\"",
                MediaError::Malformed,
            ),
            (
                "application/x-www-form-urlencoded; charset=utf-8; charset=ibm037",
                MediaError::Parameter,
            ),
            (
                "application/x-www-form-urlencoded; x=\"charset=ibm037\"",
                MediaError::Malformed,
            ),
            (
                "application/x-www-form-urlencoded; boundary=x",
                MediaError::Parameter,
            ),
            (
                "application/x-www-form-urlencoded;; charset=utf-8",
                MediaError::Malformed,
            ),
            (
                "application/x-www-form-urlencoded, application/json",
                MediaError::Malformed,
            ),
            (
                "application/x-www-form-urlencoded\u{0}",
                MediaError::Malformed,
            ),
            (" application/json", MediaError::Malformed),
            ("application /json", MediaError::Malformed),
            ("application/json-seq", MediaError::Unsupported),
            ("multipart/form-data; boundary=x", MediaError::Unsupported),
            ("text/plain", MediaError::Unsupported),
            ("application/xml", MediaError::Unsupported),
            ("", MediaError::Malformed),
        ] {
            assert_eq!(login_media(value.as_bytes()), Err(err), "{value:?}");
        }
    }
}
