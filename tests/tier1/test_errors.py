"""The one error type: it names the input and the fix, also when a node calls shared code."""
import re

import pytest

from student_teacher.schedulers.errors import FILE_NAME_MAX, InputError, require_file_stem


def test_an_error_of_shared_code_takes_the_calling_nodes_input_name():
    e = InputError("model", "is a SDXL model", "use an SD1.5 teacher").renamed({"model": "teacher"})
    assert str(e) == "teacher: is a SDXL model. Fix: use an SD1.5 teacher" and e.input_name == "teacher"
    assert InputError("cfg", "got nan", "give a number").renamed({"model": "teacher"}).input_name == "cfg"


@pytest.mark.parametrize("typed,stem", [("lcm_sd15", "lcm_sd15"), (" runs/a/b.json ", "b"), ("x\\y.JSON", "y"),
                                        ("\u00fcber-run 2", "\u00fcber-run 2")])
def test_a_typed_file_name_becomes_a_stem_in_the_folder(typed, stem):
    assert require_file_stem("filename", typed, "lcm") == stem


@pytest.mark.parametrize("typed,problem", [("", "empty"), ("  ", "empty"), (".", "hidden"), ("..", "hidden"),
                                           (".env", "hidden"), ("a\x00b", "holds '\\x00'"), ("a:b", "holds ':'"),
                                           ("x" * (FILE_NAME_MAX + 1), "too long")])
def test_file_names_no_system_takes_are_refused_by_name(typed, problem):
    with pytest.raises(InputError, match=f"filename: .*{re.escape(problem)}.*Fix: give a plain name"):
        require_file_stem("filename", typed, "lcm")
