<%@ page contentType="text/html; charset=UTF-8" session="false" %><%
  jakarta.servlet.http.HttpSession s = request.getSession(false);
  Object user = s == null ? null : s.getAttribute("user");
  if (user == null) {
    response.sendRedirect(request.getContextPath() + "/login");
    return;
  }
%><h1>Hello <%= user %></h1>
