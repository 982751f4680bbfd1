"""static/chat/markdown.js, run in Chromium: Markdown renders, and nothing in a reply can run."""

from __future__ import annotations

import pytest
import pytest_asyncio

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

RENDER = """async (text) => {
  const { renderMarkdown } = await import("/static/chat/markdown.js");
  const box = document.createElement("div");
  box.append(renderMarkdown(text));
  return box.innerHTML;
}"""

HOSTILE = [
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 1">',
    "[click](javascript:window.__pwned=1)",
    "[click](JAVASCRIPT:window.__pwned=1)",
    "[x](data:text/html,<script>window.__pwned=1</script>)",
    "**<svg onload=window.__pwned=1>**",
    "`</code><script>window.__pwned=1</script>`",
    "```html\n</code></pre><script>window.__pwned=1</script>\n```",
    "- <iframe src=javascript:window.__pwned=1>",
    "[**x**](https://ok.example/\" onmouseover=\"window.__pwned=1)",
]


@pytest_asyncio.fixture(loop_scope="session")
async def render(page, live_asgi):
    await page.goto("/login/")

    async def run(text: str) -> str:
        return await page.evaluate(RENDER, text)

    return run


@pytest.mark.parametrize("text", HOSTILE)
async def test_markup_in_a_reply_shows_as_text_and_never_runs(page, render, text):
    html = await render(text)
    assert "<script" not in html and "<img" not in html and "<svg" not in html and "<iframe" not in html
    assert "javascript:" not in html.split("href=")[-1] if "href=" in html else True
    assert " on" not in "".join(part.split(">", 1)[0] for part in html.split("<")[1:])  # no on* attributes
    assert await page.evaluate("window.__pwned") is None


async def test_code_blocks_keep_their_text_verbatim(render):
    html = await render("Look:\n\n```python\nif a < b and c > d:\n    print('<b>')\n```\nafter")
    assert '<pre class="md-code" data-language="python"><code class="language-python">' in html
    assert "if a &lt; b and c &gt; d:\n    print('&lt;b&gt;')</code></pre>" in html
    assert html.endswith("<p>after</p>")


async def test_an_unclosed_code_fence_renders_as_code_while_it_streams(render):
    assert await render("```js\nlet x = 1;") == (
        '<pre class="md-code" data-language="js"><code class="language-js">let x = 1;</code></pre>'
    )


async def test_inline_emphasis_code_and_links(render):
    html = await render("**bold**, *it*, _it_, ~~gone~~, `a*b*c`, snake_case_name and [EVA](https://eva.example/x?a=1&b=2)")
    assert "<strong>bold</strong>" in html and html.count("<em>it</em>") == 2 and "<del>gone</del>" in html
    assert "<code>a*b*c</code>" in html and "snake_case_name" in html
    link = '<a href="https://eva.example/x?a=1&amp;b=2" rel="noopener noreferrer nofollow" target="_blank">EVA</a>'
    assert link in html


async def test_bare_urls_become_links_without_trailing_punctuation(render):
    html = await render("See https://example.org/docs.")
    assert '<a href="https://example.org/docs" ' in html and "</a>.</p>" in html


async def test_lists_nest_and_number(render):
    html = await render("1. one\n2. two\n   - sub a\n   - sub b\n3. three")
    assert html == "<ol><li>one</li><li>two<ul><li>sub a</li><li>sub b</li></ul></li><li>three</li></ol>"


async def test_headings_stay_below_the_pages_own(render):
    assert await render("# Title\ntext") == '<h3 class="md-heading">Title</h3><p>text</p>'


async def test_single_newlines_are_kept_as_line_breaks(render):
    assert await render("line one\nline two\n\nnext") == "<p>line one<br>line two</p><p>next</p>"


async def test_quotes_and_rules(render):
    assert await render("> quoted *text*\n\n---") == "<blockquote><p>quoted <em>text</em></p></blockquote><hr>"
