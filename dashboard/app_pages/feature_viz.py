import streamlit as st

st.title("feature_viz")
st.info("This page is being built.")
