import pytest
import torch

from workbench.data.docstrings import PACKAGES, docstring_texts, load_docstring_topics

transformers = pytest.importorskip("transformers")


def test_texts_are_real_docstrings():
    texts = docstring_texts("json")
    assert len(texts) > 5 and all(len(t.split()) >= 5 for t in texts)
    assert texts == sorted(set(texts))


def test_task_is_balanced_seeded_and_tokenized():
    from workbench.models.pretrained import load_minilm
    _, tokenizer = load_minilm()
    data = load_docstring_topics(tokenizer, seed=1, size="ci", max_length=32)
    again = load_docstring_topics(tokenizer, seed=1, size="ci", max_length=32)
    assert torch.equal(data.x_train, again.x_train) and torch.equal(data.y_test, again.y_test)
    assert data.x_train.shape[1:] == (2, 32) and data.n_classes == len(PACKAGES)
    counts = torch.bincount(torch.cat([data.y_train, data.y_test]), minlength=len(PACKAGES))
    assert counts.min() == counts.max() == 48
    assert set(data.x_train[:, 1].unique().tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="unknown size"):
        load_docstring_topics(tokenizer, size="huge")


def test_missing_package_is_named():
    with pytest.raises(FileNotFoundError, match="'no_such_pkg' is missing"):
        docstring_texts("no_such_pkg")
