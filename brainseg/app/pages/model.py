"""Model page: the test split's figures (Dice distribution, confusion matrix, ROC) and the training curves."""
import streamlit as st

from brainseg.app import cache
from brainseg.figures import charts


def model_page() -> None:
    metrics = cache.load_test_metrics()
    st.subheader("Test metrics")
    if metrics is None:
        st.info("`weights/metrics_test.json` is missing: the test-split charts appear once it is computed.")
    else:
        columns = st.columns(3)
        for column, figure, key in zip(columns, (charts.dice_distribution(metrics), charts.confusion_matrix(metrics),
                                                 charts.roc_figure(metrics)), ("dice", "confusion", "roc")):
            column.plotly_chart(figure, key=key)
    st.subheader("Training")
    members = cache.predictor().segmenter_files
    for column, kind in zip(st.columns(2), ("segmenter", "classifier")):
        histories = cache.load_member_histories(members) if kind == "segmenter" and len(members) > 1 else {}
        history = cache.load_history(kind)
        if histories:
            column.plotly_chart(charts.member_curves(histories), key="history_members")
        elif history is None:
            column.info(f"`weights/history_{kind}.json` is missing.")
        else:
            column.plotly_chart(charts.training_curves(history), key=f"history_{kind}")


model_page()
