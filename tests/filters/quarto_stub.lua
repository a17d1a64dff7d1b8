-- Runs one of the book's Quarto filters under plain pandoc, for the tests:
-- the little of Quarto's Lua API that the filters use, then the filter.
--   STUB_FILTER  path of the filter (filters/slides.lua, filters/book.lua)
--   STUB_FORMAT  the format quarto.doc.is_format answers true for
--   STUB_INPUT   the document's file name (quarto.doc.input_file)
local format = os.getenv("STUB_FORMAT") or "html"
quarto = {
  doc = {
    is_format = function(name)
      return name == format
    end,
    input_file = os.getenv("STUB_INPUT") or "chapter.ipynb",
  },
}
return dofile(os.getenv("STUB_FILTER"))
