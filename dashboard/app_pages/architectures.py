import streamlit as st

st.title("architectures")
st.info("This page is being built.")
