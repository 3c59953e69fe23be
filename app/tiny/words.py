"""The tiny checkpoints' vocabulary: whole English words, so random weights read as word salad.

Every word is in the vocabulary as written here (lower case), capitalised and in capitals, so a prompt
made of them reaches a model token by token; a word the vocabulary lacks is read as the unknown token.
Answers are drawn from the lower-case words and `PUNCTUATION` only, never from byte fragments that
decode to replacement characters.
"""

from __future__ import annotations

_WORDS = """
a about above across after again against all almost alone along already also always am among an and
animal another answer any anything apple are area arm around art as ask assistant at autumn away baby back
bag ball bank basket be beach bear beautiful because bed been before began begin behind being bell below
beside best better between bicycle big bird black blanket blue boat body book both bottle bottom box boy
branch bread breakfast bridge bright brighter briefly bring brother brown build building bus busy but
butter by cake call calm came camera can candle cap car card care carry cat caption chair change child
choose circle city clean clear climb clock close cloud coat coffee cold colour come compare corner could
count country cow cup curtain cut dance dark day deep describe desk detail did different dinner dirty do
does dog door down draw dream dress drink drive dry duck during each early earth east easy eat edge egg
eight empty en end enough evening every eye face fall family far farm fast father feather feel few field
fifth find fine finger fire first fish five flag floor flower fly fog follow food foot for forest fork
four fox friend from front fruit full game garden gate gave gentle get girl give glass go gold good grass
gray great green ground group grow had hair half hall hand happy hard has hat have he head hear heavy
hello help helpful her here hill him his hold hole home horse hot house how hundred i ice idea if image
in inside into is island it its jacket jump just keep key kind king kitchen knee knife know ladder lake
lamp land large last late lazy leaf learn left leg lemon letter light like line lion little long look
low make man many map market may me middle milk mirror moment money monkey moon more morning most mother
mountain mouse mouth move much music must my name narrow near neck need nest never new next night nine no
noise north nose not nothing now number ocean of off often old on once one only open or orange other
our out outside over page paint pair paper park part party path pen pencil people photo piano picture
piece pink place plain plant plate play please pocket point pond poor quick quickly quiet rabbit rain red
right ring river road rock roof room round run sad said salt same sand say school sea season second see
seven shadow shape she sheep shelf ship shirt shoe shop short should show side sign silver simple sing
sister sit six sky sleep slow small smile snow so soft some something song soon south sofa space speak
spoon spring square stair star station still stone stop story street strong summer sun sure sweet system
table tail take tall tea teacher tell ten than that the their them then there these they thing think
third this three through time tiny to today together tomorrow too top tower town toy train tree truck
true two under up upon us use very village wall warm was watch water wave way we weather week well went
west wet what wheel when where which while white who why wide wild will wind window winter with without
woman wood word work world would write yard year yellow yes yesterday you young your zebra user model
"""

WORDS: tuple[str, ...] = tuple(dict.fromkeys(_WORDS.split()))
PUNCTUATION: tuple[str, ...] = (".", ",", "?", "!")
# what prompts and chat templates spell, read but never answered
INPUT_ONLY: tuple[str, ...] = tuple(dict.fromkeys(
    [case for word in WORDS for case in (word.capitalize(), word.upper())] + [":", ";", "'", '"', "(", ")", "-", "/"]))
# vLLM's Gemma 3 and PaliGemma processors look these up by their text (see the vLLM reference)
NEWLINES: tuple[str, ...] = ("\n", "\n\n", "\n\n\n", "\n\n\n\n")
