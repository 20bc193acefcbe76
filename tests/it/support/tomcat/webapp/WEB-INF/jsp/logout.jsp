<%@ page contentType="text/html; charset=UTF-8" session="false" %><%
  jakarta.servlet.http.HttpSession s = request.getSession(false);
  if (s != null) s.invalidate();
  response.sendRedirect(request.getContextPath() + "/login");
%>
