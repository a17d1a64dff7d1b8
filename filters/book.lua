--[[
book.lua: what is meant for speakers stays out of the book.

Used by the book profile (_quarto-book.yml). The chapters carry speaker
notes (`::: {.notes}`) for their slides; reveal.js turns them into the
presenter's notes, but the html format would print them as ordinary
paragraphs ("Point at the n=2,000 column..."). They are removed here.
--]]

return {
  {
    Div = function(div)
      if div.classes:includes("notes") and not quarto.doc.is_format("revealjs") then
        return {}
      end
    end,
  },
}
