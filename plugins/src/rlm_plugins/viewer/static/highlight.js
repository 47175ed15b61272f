// A small Python syntax highlighter for the rlm viewer (no dependencies).
// highlightPython(code) -> HTML with <span class="tok-*"> around keywords, strings, comments,
// numbers, builtins, decorators and the names after def/class. Everything is HTML-escaped.
(function (global) {
  "use strict";
  var KEYWORDS = new Set(("False None True and as assert async await break class continue def del elif " +
    "else except finally for from global if import in is lambda nonlocal not or pass raise return try " +
    "while with yield match case").split(" "));
  var BUILTINS = new Set(("print len range str int float list dict set tuple bool sum min max sorted " +
    "enumerate zip map filter open isinstance type repr abs any all round reversed super object " +
    "Exception ValueError KeyError TypeError IndexError RuntimeError format iter next hasattr getattr " +
    "setattr llm_query llm_query_batched rlm_query rlm_query_batched FINAL FINAL_VAR SHOW_VARS " +
    "answer context").split(" "));
  // One alternation, tried left to right at each position.
  var TOKEN = new RegExp([
    "(#[^\\n]*)",                                                        // 1 comment
    "((?:[rRbBuUfF]{0,2})(?:\"\"\"[\\s\\S]*?(?:\"\"\"|$)|'''[\\s\\S]*?(?:'''|$)|\"(?:\\\\.|[^\"\\\\\\n])*\"?|'(?:\\\\.|[^'\\\\\\n])*'?))", // 2 string
    "(@[A-Za-z_][\\w.]*)",                                               // 3 decorator
    "(\\b(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|\\d[\\d_]*\\.?[\\d_]*(?:[eE][+-]?\\d+)?j?|\\.\\d[\\d_]*(?:[eE][+-]?\\d+)?j?)\\b)", // 4 number
    "([A-Za-z_][A-Za-z0-9_]*)"                                           // 5 name
  ].join("|"), "g");

  function esc(s) {
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  }

  function highlightPython(code) {
    var out = [], last = 0, m, prev = "";
    TOKEN.lastIndex = 0;
    while ((m = TOKEN.exec(code)) !== null) {
      if (m[0] === "") { TOKEN.lastIndex++; continue; }
      out.push(esc(code.slice(last, m.index)));
      var cls = null, text = m[0];
      if (m[1]) cls = "tok-com";
      else if (m[2]) cls = "tok-str";
      else if (m[3]) cls = "tok-dec";
      else if (m[4]) cls = "tok-num";
      else if (m[5]) {
        if (prev === "def" || prev === "class") cls = "tok-fn";
        else if (KEYWORDS.has(text)) cls = "tok-kw";
        else if (text === "self" || text === "cls") cls = "tok-self";
        else if (BUILTINS.has(text)) cls = "tok-bi";
        prev = text;
      }
      if (!m[5]) prev = "";
      out.push(cls ? '<span class="' + cls + '">' + esc(text) + "</span>" : esc(text));
      last = m.index + text.length;
    }
    out.push(esc(code.slice(last)));
    return out.join("");
  }

  global.highlightPython = highlightPython;
  global.escapeHtml = esc;
})(typeof window !== "undefined" ? window : this);
