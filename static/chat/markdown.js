// A small, strict Markdown renderer for model replies.
//
// Safety by construction: it never parses or assigns HTML. Every piece of the reply becomes a
// text node (createTextNode / textContent) inside elements chosen from a fixed list, and the
// only attribute taken from the reply is a link's href, kept only when it parses as an http(s)
// URL. So "<script>", "<img onerror=...>" or "javascript:" in a reply show as plain text.
//
// Supported: paragraphs (single newlines kept as line breaks), fenced code blocks (``` or ~~~,
// an unclosed fence runs to the end so that a streaming reply renders well), inline code,
// **bold**, __bold__, *italics*, _italics_, ~~strike~~, [links](https://...), bare http(s)
// URLs, headings, bullet and numbered lists (nested by indentation), block quotes, rules.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const BULLET = /^( {0,12})([-*+])[ \t]+(.*)$/;
const ORDERED = /^( {0,12})(\d{1,9})[.)][ \t]+(.*)$/;
const QUOTE = /^ {0,3}>[ ]?(.*)$/;
const BLANK = /^\s*$/;
const MAX_DEPTH = 8;

/** Render `text` into a DocumentFragment of safe nodes. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  const lines = String(text ?? "").replace(/\r\n?/g, "\n").split("\n");
  renderBlocks(lines, fragment, 0);
  return fragment;
}

/** A URL we are willing to link to: absolute http or https, nothing else. */
export function safeHref(raw) {
  let url;
  try {
    url = new URL(String(raw).trim());
  } catch {
    return null;
  }
  return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
}

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || BULLET.test(line) ||
    ORDERED.test(line) || QUOTE.test(line);
}

function renderBlocks(lines, parent, depth) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (BLANK.test(line)) {
      i += 1;
      continue;
    }
    let match;
    if ((match = line.match(FENCE))) {
      i = renderFence(lines, i, match, parent);
    } else if ((match = line.match(HEADING))) {
      const level = Math.min(6, match[1].length + 2); // a reply's "#" must not outrank the page's h1/h2
      const heading = el(`h${level}`, "md-heading");
      renderInline(match[2], heading, depth);
      parent.append(heading);
      i += 1;
    } else if (RULE.test(line)) {
      parent.append(el("hr"));
      i += 1;
    } else if (BULLET.test(line) || ORDERED.test(line)) {
      i = renderList(lines, i, parent, depth);
    } else if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && (match = lines[i].match(QUOTE))) {
        quoted.push(match[1]);
        i += 1;
      }
      const quote = el("blockquote");
      if (depth < MAX_DEPTH) renderBlocks(quoted, quote, depth + 1);
      else quote.textContent = quoted.join("\n");
      parent.append(quote);
    } else {
      const paragraph = [];
      while (i < lines.length && !BLANK.test(lines[i]) && (paragraph.length === 0 || !startsBlock(lines[i]))) {
        paragraph.push(lines[i].trim());
        i += 1;
      }
      const p = el("p");
      paragraph.forEach((text, index) => {
        if (index) p.append(el("br"));
        renderInline(text, p, depth);
      });
      parent.append(p);
    }
  }
}

function renderFence(lines, start, match, parent) {
  const fence = match[1];
  const language = match[2].replace(/[^\w+#.-]/g, "").slice(0, 30);
  const closing = new RegExp(`^ {0,3}${fence[0] === "`" ? "`" : "~"}{${fence.length},}\\s*$`);
  const body = [];
  let i = start + 1;
  while (i < lines.length && !closing.test(lines[i])) {
    body.push(lines[i]);
    i += 1;
  }
  const pre = el("pre", "md-code");
  const code = el("code");
  if (language) {
    code.className = `language-${language}`;
    pre.dataset.language = language;
  }
  code.textContent = body.join("\n");
  pre.append(code);
  parent.append(pre);
  return i + 1; // past the closing fence (or the end, for an unclosed fence)
}

function listMatch(line) {
  let match = line.match(BULLET);
  if (match) return { indent: match[1].length, ordered: false, marker: match[2], content: match[3] };
  match = line.match(ORDERED);
  if (match) return { indent: match[1].length, ordered: true, start: Number(match[2]), content: match[3] };
  return null;
}

function indentOf(line) {
  return line.length - line.trimStart().length;
}

function renderList(lines, start, parent, depth) {
  const first = listMatch(lines[start]);
  const list = el(first.ordered ? "ol" : "ul");
  if (first.ordered && first.start !== 1) list.start = first.start;
  let i = start;
  while (i < lines.length) {
    const item = listMatch(lines[i]);
    if (!item || item.ordered !== first.ordered || item.indent < first.indent || item.indent > first.indent + 1) break;
    const itemLines = [item.content];
    i += 1;
    // The item goes on over indented lines (nested lists, continued text) and over one blank
    // line when more of the item follows.
    while (i < lines.length) {
      const next = lines[i];
      if (BLANK.test(next)) {
        const after = lines[i + 1];
        if (after !== undefined && !BLANK.test(after) && indentOf(after) > first.indent) {
          itemLines.push("");
          i += 1;
          continue;
        }
        break;
      }
      const nested = listMatch(next);
      if (nested && nested.indent <= first.indent + 1) break;
      if (!nested && indentOf(next) <= first.indent && startsBlock(next)) break;
      itemLines.push(next.slice(Math.min(indentOf(next), first.indent + 2)));
      i += 1;
    }
    const li = el("li");
    if (depth < MAX_DEPTH) {
      renderBlocks(itemLines, li, depth + 1);
      // A one-paragraph item renders without the <p>, as a "tight" list item.
      if (li.firstChild && li.firstChild.nodeName === "P") {
        const p = li.firstChild;
        p.replaceWith(...p.childNodes);
      }
    } else {
      li.textContent = itemLines.join("\n");
    }
    list.append(li);
    if (i < lines.length && BLANK.test(lines[i])) {
      const after = lines[i + 1];
      const again = after === undefined ? null : listMatch(after);
      if (again && again.ordered === first.ordered && again.indent === first.indent) {
        i += 1;
        continue;
      }
      break;
    }
  }
  parent.append(list);
  return i;
}

// --- inline ------------------------------------------------------------------------------

const BARE_URL = /^https?:\/\/[^\s<>"'`]+/;
const ESCAPABLE = "\\`*_{}[]()#+-.!~>|";

function renderInline(text, parent, depth) {
  let buffer = "";
  const flush = () => {
    if (buffer) parent.append(document.createTextNode(buffer));
    buffer = "";
  };
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    const rest = text.slice(i);

    if (ch === "\\" && i + 1 < text.length && ESCAPABLE.includes(text[i + 1])) {
      buffer += text[i + 1];
      i += 2;
      continue;
    }
    if (ch === "`") {
      const run = rest.match(/^`+/)[0];
      const close = text.indexOf(run, i + run.length);
      if (close !== -1) {
        flush();
        const code = el("code");
        code.textContent = text.slice(i + run.length, close).replace(/^ (.+) $/, "$1");
        parent.append(code);
        i = close + run.length;
        continue;
      }
      buffer += run;
      i += run.length;
      continue;
    }
    if (ch === "[" && depth < MAX_DEPTH) {
      const link = matchLink(text, i);
      if (link) {
        const href = safeHref(link.url);
        if (href) {
          flush();
          const a = el("a");
          a.href = href;
          a.rel = "noopener noreferrer nofollow";
          a.target = "_blank";
          renderInline(link.label, a, MAX_DEPTH); // no links or deep nesting inside a link
          parent.append(a);
        } else {
          buffer += text.slice(i, link.end); // not http(s): shown as the text it is
        }
        i = link.end;
        continue;
      }
    }
    if ((ch === "h" || ch === "H") && depth < MAX_DEPTH && (i === 0 || /[\s(]/.test(text[i - 1]))) {
      const bare = rest.match(BARE_URL);
      if (bare) {
        const url = bare[0].replace(/[.,;:!?)\]]+$/, "");
        const href = safeHref(url);
        if (href) {
          flush();
          const a = el("a");
          a.href = href;
          a.rel = "noopener noreferrer nofollow";
          a.target = "_blank";
          a.textContent = url;
          parent.append(a);
          i += url.length;
          continue;
        }
      }
    }
    const emphasis = depth < MAX_DEPTH ? matchEmphasis(text, i) : null;
    if (emphasis) {
      flush();
      const node = el(emphasis.tag);
      renderInline(emphasis.inner, node, depth + 1);
      parent.append(node);
      i = emphasis.end;
      continue;
    }
    buffer += ch;
    i += 1;
  }
  flush();
}

function matchLink(text, start) {
  // [label](url) with balanced brackets in the label and no spaces in the url.
  let level = 0;
  let i = start;
  for (; i < text.length; i += 1) {
    if (text[i] === "\\") {
      i += 1;
    } else if (text[i] === "[") {
      level += 1;
    } else if (text[i] === "]") {
      level -= 1;
      if (level === 0) break;
    }
  }
  if (level !== 0 || text[i + 1] !== "(") return null;
  const match = text.slice(i + 2).match(/^<?([^\s()<>]+)>?(?:\s+"[^"]*")?\)/);
  if (!match) return null;
  return { label: text.slice(start + 1, i), url: match[1], end: i + 2 + match[0].length };
}

const EMPHASIS = [
  { marker: "**", tag: "strong" },
  { marker: "__", tag: "strong", wordBound: true },
  { marker: "~~", tag: "del" },
  { marker: "*", tag: "em" },
  { marker: "_", tag: "em", wordBound: true },
];

function matchEmphasis(text, i) {
  for (const { marker, tag, wordBound } of EMPHASIS) {
    if (!text.startsWith(marker, i)) continue;
    const open = i + marker.length;
    if (open >= text.length || /\s/.test(text[open])) continue; // "* item" or "a * b" is not emphasis
    if (wordBound && i > 0 && /\w/.test(text[i - 1])) continue; // snake_case_names stay as they are
    let close = text.indexOf(marker, open + 1);
    while (close !== -1) {
      const single = marker.length === 1;
      const doubled = single && (text[close + 1] === marker || text[close - 1] === marker);
      const closesWord = !/\s/.test(text[close - 1]) && !(wordBound && /\w/.test(text[close + marker.length] ?? ""));
      if (!doubled && closesWord) break;
      close = text.indexOf(marker, close + 1);
    }
    if (close === -1) continue;
    return { tag, inner: text.slice(open, close), end: close + marker.length };
  }
  return null;
}
