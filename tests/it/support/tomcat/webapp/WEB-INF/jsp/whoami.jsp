<%@ page contentType="application/json; charset=UTF-8" session="false" %><%--
  JSON: the user of the session Tomcat found for this request (from a cookie or the URL), the
  proxy's X-Twofa-User header, and where the session id came from. 401 when no user.
--%><%!
  static String json(Object value) {
    if (value == null) return "null";
    StringBuilder out = new StringBuilder("\"");
    for (char c : value.toString().toCharArray()) {
      if (c == '"' || c == '\\') out.append('\\').append(c);
      else if (c < 0x20) out.append(String.format("\\u%04x", (int) c));
      else out.append(c);
    }
    return out.append('"').toString();
  }
%><%
  jakarta.servlet.http.HttpSession s = request.getSession(false);
  Object user = s == null ? null : s.getAttribute("user");
  String from = request.getRequestedSessionId() == null ? null
      : request.isRequestedSessionIdFromCookie() ? "cookie"
      : request.isRequestedSessionIdFromURL() ? "url" : "other";
  StringBuilder cookies = new StringBuilder("[");
  if (request.getCookies() != null) {
    for (jakarta.servlet.http.Cookie c : request.getCookies()) {
      if (cookies.length() > 1) cookies.append(',');
      cookies.append('[').append(json(c.getName())).append(',').append(json(c.getValue())).append(']');
    }
  }
  cookies.append(']');
  if (user == null) response.setStatus(401);
%>{"user":<%= json(user) %>,"identity":<%= json(request.getHeader("X-Twofa-User")) %>,"session_from":<%= json(from) %>,"cookies":<%= cookies %>}
