import streamlit as st

st.title("shape_bias")
st.info("This page is being built.")
