import streamlit as st

st.title("dataset_examples")
st.info("This page is being built.")
