--[[
slides.lua: turns a chapter written for reading into a deck a presenter can use.

Used by the slides profile only (_quarto-slides.yml), on every deck. The
chapters are written as prose for readers; on a 1050x700 reveal.js canvas
that prose overflows. The rule this filter applies, the same for every
chapter, so that no chapter needs a second copy of itself:

  * prose goes to the speaker notes: paragraphs, long lists and quotes,
    and the computed sentences of hidden cells, become the notes of the
    slide they belong to (the presenter's script); existing `.notes`
    blocks join them;
  * the slide keeps what is shown: figures, display equations (taken out
    of their paragraph), short lists, short code listings and narrow
    tables; a figure gets a slide of its own (a section with several
    figures becomes several slides under the same title);
  * code cells show no code unless the cell asks for it with
    `#| classes: slide-code` (a deliberate snippet); printed output is
    dropped; tables wider than MAX_TABLE_COLUMNS columns stay in the book;
  * exercises show the question's bold title, not the question's text
    (it goes to the notes) nor the collapsed hint callouts (dropped);
  * anything inside `::: {.content-visible when-format="revealjs"}` is
    slide content written for the slides and is kept as it is.

Only the chapters (.ipynb) are restructured; a deck written as slides
(slides/talk.qmd) is left as written, except that its hints are dropped
too.

The filter runs on the executed document, so a deck looks the same whether
it was rendered alone or after the book (whose frozen results it reuses).
--]]

local MAX_LIST_ITEMS = 6
local MAX_LIST_WORDS = 45
local MAX_CODE_LINES = 14
local MAX_TABLE_COLUMNS = 7
local MAX_TABLE_ROWS = 10

local function is_revealjs()
  return quarto.doc.is_format("revealjs")
end

local function is_chapter()
  return is_revealjs() and quarto.doc.input_file:match("%.ipynb$") ~= nil
end

local function as_notes(content)
  return pandoc.Div(content, pandoc.Attr("", { "notes" }))
end

local function line_count(code)
  return select(2, code.text:gsub("\n", "")) + 1
end

local function has_class(el, name)
  return el.classes ~= nil and el.classes:includes(name)
end

local function word_count(blocks)
  local n = 0
  for _ in pandoc.utils.stringify(blocks):gmatch("%S+") do
    n = n + 1
  end
  return n
end

-- What gets a slide of its own: a figure, a table, a code listing of more
-- than a few lines.
local SHORT_CODE_LINES = 6
local function is_visual(el)
  if el.t == "CodeBlock" then
    return line_count(el) > SHORT_CODE_LINES
  end
  local found = false
  pandoc.walk_block(pandoc.Div({ el }), {
    Image = function()
      found = true
    end,
    Table = function()
      found = true
    end,
    CodeBlock = function(code)
      if line_count(code) > SHORT_CODE_LINES then
        found = true
      end
    end,
  })
  return found
end

local function contains_image(el)
  local found = false
  pandoc.walk_block(el, {
    Image = function()
      found = true
    end,
  })
  return found
end

-- Raw HTML holding a given tag ("<style", "<table").
local function is_html_with(raw, tag)
  return raw.format == "html" and raw.text:find(tag, 1, true) ~= nil
end

local function is_rich_repr(el)
  local rich = false
  pandoc.walk_block(el, {
    RawBlock = function(raw)
      if is_html_with(raw, "<style") then
        rich = true
      end
    end,
  })
  return rich
end

-- Lines a row takes on a slide: its text, all cells together, wraps about
-- every TABLE_LINE_CHARS characters (the deck's table font on the 1050 px
-- canvas); a table whose rows and caption take more than MAX_TABLE_LINES
-- lines in all is taller than a slide even with few rows (long names, a
-- column of phrases, a caption of several sentences).
local TABLE_LINE_CHARS = 90
local MAX_TABLE_LINES = 11
local function row_lines(row)
  local chars = 0
  for _, cell in ipairs(row.cells) do
    chars = chars + #pandoc.utils.stringify(cell.contents) + 2
  end
  return math.max(1, math.ceil(chars / TABLE_LINE_CHARS))
end

local function table_fits(tbl, extra_lines)
  local columns = #tbl.colspecs
  local rows = 0
  local caption = #pandoc.utils.stringify(tbl.caption.long or {})
  local lines = math.ceil(caption / TABLE_LINE_CHARS) + (extra_lines or 0)
  for _, row in ipairs(tbl.head.rows) do
    lines = lines + row_lines(row)
  end
  for _, body in ipairs(tbl.bodies) do
    rows = rows + #body.body
    for _, row in ipairs(body.body) do
      lines = lines + row_lines(row)
    end
  end
  return columns <= MAX_TABLE_COLUMNS and rows <= MAX_TABLE_ROWS and lines <= MAX_TABLE_LINES
end

-- The same estimate for a table that reaches the filter as raw HTML (a cell
-- that displays HTML it built itself; a pandas Styler's table in a labelled
-- cell arrives already parsed into a pandoc table): rows from its <tr>
-- elements, each row's text with the tags removed, and the lines of its
-- caption. The two extra rows allow for a header of up to two rows, which
-- table_fits does not count against MAX_TABLE_ROWS either.
local function html_table_fits(html, caption_lines)
  local rows, lines = 0, caption_lines
  for row in html:gmatch("<tr.-</tr>") do
    rows = rows + 1
    local text = row:gsub("<[^>]*>", " "):gsub("&nbsp;", " "):gsub("%s+", " ")
    lines = lines + math.max(1, math.ceil(#text / TABLE_LINE_CHARS))
  end
  return rows <= MAX_TABLE_ROWS + 2 and lines <= MAX_TABLE_LINES
end

local function tables_fit(el)
  local ok = true
  -- Text around the tables (a labelled cell's caption is text of the float
  -- that holds the table, not the table's own caption) takes lines too.
  local around = #pandoc.utils.stringify(el)
  pandoc.walk_block(pandoc.Div({ el }), {
    Table = function(tbl)
      around = around - #pandoc.utils.stringify(tbl)
    end,
  })
  local caption_lines = math.ceil(math.max(0, around) / TABLE_LINE_CHARS)
  pandoc.walk_block(pandoc.Div({ el }), {
    Table = function(tbl)
      if not table_fits(tbl, caption_lines) then
        ok = false
      end
    end,
    RawBlock = function(raw)
      if is_html_with(raw, "<table") and not html_table_fits(raw.text, caption_lines) then
        ok = false
      end
    end,
  })
  return ok
end

local function has_table(el)
  local found = false
  pandoc.walk_block(pandoc.Div({ el }), {
    Table = function()
      found = true
    end,
    RawBlock = function(raw)
      if is_html_with(raw, "<table") then
        found = true
      end
    end,
  })
  return found
end

-- A cell on a slide: code only when asked for, no printed output, figures
-- and narrow tables kept, computed prose returned as notes.
local function cell_for_slide(cell)
  local keep_code = has_class(cell, "slide-code")
  local kept = pandoc.List()
  local notes = pandoc.List()
  for _, block in ipairs(cell.content) do
    if block.t == "CodeBlock" and has_class(block, "cell-code") then
      if keep_code then
        kept:insert(block)
      end
    elseif block.t == "Div" and (has_class(block, "cell-output-stdout") or has_class(block, "cell-output-stderr")) then
      -- printed output stays in the book
    elseif block.t == "Div" and has_class(block, "cell-output-markdown") and not contains_image(block) then
      -- computed prose goes to the notes; a short listing (show_source) stays
      for _, inner in ipairs(block.content) do
        if inner.t == "CodeBlock" and line_count(inner) <= MAX_CODE_LINES then
          kept:insert(inner)
        else
          notes:insert(inner)
        end
      end
    elseif block.t == "Div" and has_class(block, "cell-output-display") and is_rich_repr(block) then
      -- a library's styled html view of a value (xarray, InferenceData)
    elseif block.t == "Div" and has_class(block, "cell-output-display") and #block.content > 0
      and block.content[1].t == "CodeBlock" and not contains_image(block) and not has_table(block) then
      -- a value's plain-text repr ({'loc': 0.91...}): the book's, not the slide's
    elseif has_table(block) and not contains_image(block) then
      if tables_fit(block) then
        kept:insert(block)
      else
        notes:insert(block) -- in the presenter's view; cross-references resolve
      end
    else
      kept:insert(block)
    end
  end
  if #kept == 0 then
    return nil, notes
  end
  cell.content = kept
  return cell, notes
end

-- A display equation on a slide; one whose longest line is long in TeX is
-- set smaller so that it fits the canvas's width (about 95 characters of
-- TeX fill 1050 px at the deck's size; more in dense TeX, fewer in aligned).
local FULL_SIZE_TEX_CHARS = 95
local function display_math(para)
  local out = pandoc.List()
  for _, x in ipairs(para.content) do
    if x.t == "Math" and x.mathtype == "DisplayMath" then
      local longest = 0
      for line in (x.text .. "\\\\"):gmatch("(.-)\\\\") do
        local n = #line:gsub("%s+", " ")
        longest = math.max(longest, n)
      end
      local equation = pandoc.Para({ x })
      if longest > FULL_SIZE_TEX_CHARS then
        local percent = math.max(55, math.floor(100 * FULL_SIZE_TEX_CHARS / longest))
        equation = pandoc.Div({ equation }, pandoc.Attr("", { "long-math" }, { style = "font-size: " .. percent .. "%" }))
      end
      out:insert(equation)
    end
  end
  return out
end

local function list_fits(list)
  return #list.content <= MAX_LIST_ITEMS and word_count(list.content) <= MAX_LIST_WORDS
end

-- A list item that opens with a bold title ("**Laplace in a hurry.** ...")
-- shows the title on the slide; the whole item is in the notes.
local function titles_only(list)
  local titled = pandoc.List()
  for _, item in ipairs(list.content) do
    local first = item[1]
    if first == nil or (first.t ~= "Para" and first.t ~= "Plain") or first.content[1] == nil or first.content[1].t ~= "Strong" then
      return nil
    end
    titled:insert({ pandoc.Plain({ first.content[1] }) })
  end
  if list.t == "OrderedList" then
    return pandoc.OrderedList(titled, list.listAttributes)
  end
  return pandoc.BulletList(titled)
end

-- One block of a section: what stays on the slide, what goes to the notes.
local function triage(block)
  local t = block.t
  if t == "Para" or t == "Plain" then
    return display_math(block), pandoc.List({ block })
  elseif t == "BulletList" or t == "OrderedList" then
    -- a list whose every item opens with a bold title (exercises, a
    -- catalogue of options) shows the titles; the items go to the notes
    local titled = titles_only(block)
    if titled ~= nil then
      return pandoc.List({ titled }), pandoc.List({ block })
    end
    if list_fits(block) then
      return pandoc.List({ block }), pandoc.List()
    end
    return pandoc.List(), pandoc.List({ block })
  elseif t == "BlockQuote" or t == "DefinitionList" or t == "LineBlock" then
    return pandoc.List(), pandoc.List({ block })
  elseif t == "CodeBlock" then
    if line_count(block) <= MAX_CODE_LINES then
      return pandoc.List({ block }), pandoc.List()
    end
    return pandoc.List(), pandoc.List()
  elseif t == "Table" then
    if table_fits(block) then
      return pandoc.List({ block }), pandoc.List()
    end
    return pandoc.List(), pandoc.List({ block })
  elseif t == "Div" then
    if has_class(block, "notes") then
      return pandoc.List(), block.content
    end
    if has_class(block, "cell") then
      local cell, notes = cell_for_slide(block)
      return cell and pandoc.List({ cell }) or pandoc.List(), notes
    end
    return pandoc.List({ block }), pandoc.List()
  end
  return pandoc.List({ block }), pandoc.List()
end

local function new_slide(header)
  return { header = header, kept = pandoc.List(), notes = pandoc.List(), figures = 0 }
end

local function continuation(header)
  local copy = header:clone()
  copy.identifier = ""
  copy.classes = pandoc.List({ "unlisted" })
  return copy
end

-- The first sentence of the first paragraph in the notes, for a slide that
-- would otherwise show only its title: the section's topic sentence.
local MAX_LEAD_WORDS = 40
local function lead_sentence(notes)
  for _, block in ipairs(notes) do
    if block.t == "Para" or block.t == "Plain" then
      local lead = pandoc.List()
      local words = 0
      for i, x in ipairs(block.content) do
        if x.t == "Math" and x.mathtype == "DisplayMath" then
          return nil
        end
        lead:insert(x)
        if x.t == "Str" then
          words = words + 1
          local nxt = block.content[i + 1]
          if x.text:match("[.?!]$") and words >= 5 and (nxt == nil or nxt.t == "Space" or nxt.t == "SoftBreak") then
            return pandoc.Para(lead)
          end
        end
        if words > MAX_LEAD_WORDS then
          return nil
        end
      end
      return nil
    end
  end
  return nil
end

local function emit(slide, out)
  if slide.header ~= nil then
    out:insert(slide.header)
  end
  if #slide.kept == 0 then
    local lead = lead_sentence(slide.notes)
    if lead ~= nil then
      out:insert(pandoc.Div({ lead }, pandoc.Attr("", { "lead" })))
    end
  end
  out:extend(slide.kept)
  if #slide.notes > 0 then
    out:insert(as_notes(slide.notes))
  end
end

-- One section (a header and its blocks) becomes one or more slides: each
-- figure on a slide of its own, under the section's title.
local function section_to_slides(header, blocks, out)
  local slides = pandoc.List({ new_slide(header) })
  for _, block in ipairs(blocks) do
    local current = slides[#slides]
    local kept, notes = triage(block)
    for _, k in ipairs(kept) do
      if is_visual(k) then
        if current.figures > 0 or #current.kept > 0 then
          current = new_slide(header and continuation(header) or nil)
          slides:insert(current)
        end
        current.figures = current.figures + 1
      elseif current.figures > 0 then
        current = new_slide(header and continuation(header) or nil)
        slides:insert(current)
      end
      current.kept:insert(k)
    end
    current.notes:extend(notes)
  end
  for _, slide in ipairs(slides) do
    emit(slide, out)
  end
end

local function restructure(doc)
  -- chapters only: a deck written as slides (slides/*.qmd) is left as written
  if not is_chapter() then
    return nil
  end
  local out = pandoc.List()
  local header = nil
  local section = pandoc.List()
  local pending_notes = pandoc.List()
  local started = false

  local function flush()
    if not started then
      -- prose before the first slide title: the notes of the first slide
      for _, block in ipairs(section) do
        local kept, notes = triage(block)
        if #kept > 0 then
          out:extend(kept)
        end
        pending_notes:extend(notes)
      end
      return
    end
    if #pending_notes > 0 then
      local notes = as_notes(pending_notes)
      section:insert(1, notes)
      pending_notes = pandoc.List()
    end
    section_to_slides(header, section, out)
  end

  -- A chapter's "# Title" heading: Quarto makes it the document's title when
  -- it executes the notebook, but a book's frozen results keep it as a
  -- heading, which would become a second title slide after the book was
  -- rendered first. A level-1 heading before the first slide title of a
  -- document that has a title is that title: skipped, so that its lead
  -- paragraph goes to the notes of the first slide either way.
  local has_title = doc.meta.title ~= nil
  for _, block in ipairs(doc.blocks) do
    if block.t == "Header" and block.level == 1 and has_title and not started then
      -- the title slide already shows it
    elseif block.t == "Header" and block.level <= 2 then
      flush()
      header = block
      section = pandoc.List()
      started = true
    elseif block.t == "HorizontalRule" then
      flush()
      header = nil
      section = pandoc.List()
      started = true
      out:insert(block)
    else
      section:insert(block)
    end
  end
  flush()
  -- the bibliography on a slide of its own rather than under the last one
  local cites = false
  doc:walk({
    Cite = function()
      cites = true
    end,
  })
  if cites then
    out:insert(pandoc.Header(2, { pandoc.Str("References") }, pandoc.Attr("", { "unnumbered", "smaller" })))
    out:insert(pandoc.Div({}, pandoc.Attr("refs")))
  end
  doc.blocks = out
  return doc
end

-- Book-only content (`content-visible unless-format="revealjs"`, or
-- `content-hidden when-format="revealjs"`) of a chapter becomes speaker
-- notes instead of vanishing, so that the prose's cross-references to a
-- table or figure kept in the book still resolve on the slides.
-- `conditions` maps a key ("unless-format") to a value or a list of values.
local function book_only(behavior, conditions)
  for key, values in pairs(conditions) do
    if type(values) ~= "table" then
      values = { values }
    end
    for _, value in ipairs(values) do
      value = pandoc.utils.stringify(value)
      if (behavior == "content-visible" and key == "unless-format" and value == "revealjs")
        or (behavior == "content-hidden" and key == "when-format" and value == "revealjs")
      then
        return true
      end
    end
  end
  return false
end

-- Book-only content as notes: its prose, without its tables and figures
-- (which Quarto has not turned into cross-reference targets at this stage)
-- and with references to them pointing to the book.
local function book_only_notes(content)
  local notes = pandoc.Div(content):walk({
    Table = function()
      return {}
    end,
    Image = function()
      return {}
    end,
    Cite = function(cite)
      local id = cite.citations[1] and cite.citations[1].id or ""
      if id:match("^fig%-") or id:match("^tbl%-") then
        return pandoc.Emph({ pandoc.Str("in"), pandoc.Space(), pandoc.Str("the"), pandoc.Space(), pandoc.Str("book") })
      end
    end,
  })
  return as_notes(notes.content)
end

return {
  {
    -- exercise hints (collapsed callouts) stay in the book
    Callout = function(callout)
      if is_revealjs() and callout.collapse ~= nil and tostring(callout.collapse) == "true" then
        return {}
      end
    end,
    ConditionalBlock = function(node)
      if is_chapter() and book_only(node.behavior, node.condition) then
        -- Quarto has already emptied the hidden block; its original is kept
        local original = node.original_node or node.node
        return book_only_notes(original.content)
      end
    end,
    -- the same blocks before Quarto has parsed them (plain pandoc)
    Div = function(div)
      if not is_revealjs() then
        return nil
      end
      for _, class in ipairs(div.classes) do
        if class:match("^callout") and div.attributes["collapse"] == "true" then
          return {}
        end
        if (class == "content-visible" or class == "content-hidden") and is_chapter() then
          local conditions = {}
          for key, value in pairs(div.attributes) do
            conditions[key] = value
          end
          if book_only(class, conditions) then
            return book_only_notes(div.content)
          end
        end
      end
    end,
  },
  { Pandoc = restructure },
}
