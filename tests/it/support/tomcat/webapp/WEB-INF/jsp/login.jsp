<%@ page contentType="text/html; charset=UTF-8" session="false" import="java.util.Locale" %><%--
  The login: GET shows the form; POST reads the fields with request.getParameter, so Tomcat
  decodes the body by the charset of the request's Content-Type (EBCDIC for charset=ibm037).
  A right password starts a new session (JSESSIONID) and redirects to the account page through
  encodeRedirectURL (URL rewriting on); a wrong one shows the form again with 200.
--%><%!
  static final java.util.Map<String, String> ACCOUNTS =
      java.util.Map.of("alice", "wonderland", "mallory", "mallory");

  static String check(String name, String password) {
    if (name == null || password == null) return null;
    String account = name.trim().toLowerCase(Locale.ROOT);
    String expected = ACCOUNTS.get(account);
    return expected != null && expected.equals(password) ? account : null;
  }
%><%
  String error = "";
  if ("POST".equals(request.getMethod())) {
    String account = check(request.getParameter("username"), request.getParameter("password"));
    if (account != null) {
      jakarta.servlet.http.HttpSession old = request.getSession(false);
      if (old != null) old.invalidate();
      jakarta.servlet.http.HttpSession fresh = request.getSession(true);
      fresh.setAttribute("user", account);
      response.sendRedirect(response.encodeRedirectURL(request.getContextPath() + "/account"));
      return;
    }
    error = "<p>Wrong name or password.</p>";
  }
%><h1>Sign in</h1><%= error %><form method="post" action="<%= request.getContextPath() %>/login"><input name="username"><input name="password" type="password"><button>Sign in</button></form>
